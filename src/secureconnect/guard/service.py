"""Deny list, rate-limit mode and failed-login counts.

Requests never wait on the store for these: each replica keeps a snapshot, re-read every
``refresh_s`` in the background and at once on the replica where an admin changed something. If
the store is down, the last snapshot stays in force (blocks keep blocking).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Invalid, NotFound
from secureconnect.guard.models import blocked_networks, edge_switches, login_failures
from secureconnect.guard.schemas import (
    Blocked,
    BlockedNetwork,
    FailedLogins,
    Lifted,
    ModeSet,
    RateLimitState,
    SecurityReport,
)
from secureconnect.store import Database
from secureconnect.store.sql import bump, put

log = logging.getLogger("secureconnect.guard")

MODES = ("normal", "emergency")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FAILURES_KEPT_MS = 24 * 3600 * 1000


def parse_network(text: str) -> Network:
    """An address or CIDR, normalised (``203.0.113.7`` -> ``203.0.113.7/32``)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise Invalid("invalid_network", f"{text!r} is not an IP address or CIDR network") from None


@dataclass
class Snapshot:
    networks: list[Network] = field(default_factory=list)
    mode: str = "normal"


class RateLimiter:
    """Fixed one-minute windows per client address, in this replica's memory.

    With N replicas an address gets at most N times the limit; the ingress's own limit
    (deploy/k8s) is the shared one. Memory is bounded: windows older than a minute are dropped.
    """

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.windows: dict[str, tuple[int, int]] = {}
        self.swept = 0

    def allow(self, ip: str, now_s: float) -> tuple[bool, int]:
        """(allowed, seconds until the next request would be)."""
        minute = int(now_s // 60)
        if minute != self.swept:
            self.windows = {k: v for k, v in self.windows.items() if v[0] == minute}
            self.swept = minute
        start, used = self.windows.get(ip, (minute, 0))
        if start != minute:
            used = 0
        if used >= self.per_minute:
            return False, max(1, int((minute + 1) * 60 - now_s))
        self.windows[ip] = (minute, used + 1)
        return True, 0


class GuardService:
    def __init__(
        self,
        db: Database,
        refresh_s: float,
        emergency_per_minute: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.clock = clock
        self.refresh_s = refresh_s
        self.snapshot = Snapshot()
        self.limiter = RateLimiter(emergency_per_minute)
        self._stale_logged = False
        self._refreshing = asyncio.Lock()

    # -- the request path: memory only ---------------------------------------------------------

    def blocked(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.snapshot.networks)

    def rate_limited(self, ip: str) -> int:
        """0 when the request may go on, else the seconds to wait (emergency mode only)."""
        if self.snapshot.mode != "emergency":
            return 0
        allowed, wait = self.limiter.allow(ip, self.clock.now_ms() / 1000)
        return 0 if allowed else wait

    # -- keeping the snapshot fresh ------------------------------------------------------------

    async def refresh(self) -> None:
        # One refresh at a time: a background read that began before an admin's change must not
        # land after the refresh that follows the change.
        async with self._refreshing:
            await self._load()

    async def _load(self) -> None:
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            rows = await conn.execute(select(blocked_networks.c.network).where(_active(now)))
            networks = [ipaddress.ip_network(r.network) for r in rows]
            mode = await conn.scalar(
                select(edge_switches.c.value).where(edge_switches.c.name == "rate_limit")
            )
        self.snapshot = Snapshot(networks, mode or "normal")

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
                self._stale_logged = False
            except Exception:  # the store may be down: keep enforcing the last snapshot
                if not self._stale_logged:
                    log.warning("guard refresh failed; keeping the last deny list and mode")
                    self._stale_logged = True
            await asyncio.sleep(self.refresh_s)

    # -- admin actions -------------------------------------------------------------------------

    async def block(
        self, actor: str, network_text: str, reason: str, expires_in_s: int | None
    ) -> Blocked:
        network = str(parse_network(network_text))
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            existing = await conn.scalar(
                select(blocked_networks.c.id).where(
                    blocked_networks.c.network == network, _active(now)
                )
            )
            if existing is None:
                await conn.execute(
                    blocked_networks.insert().values(
                        network=network,
                        reason=reason,
                        blocked_by=actor,
                        blocked_at=now,
                        expires_at=now + expires_in_s * 1000 if expires_in_s else None,
                    )
                )
        log.warning("network blocked", extra={"fields": {"network": network, "actor": actor}})
        await self.refresh()
        return Blocked(network=network, already=existing is not None)

    async def lift(self, actor: str, network_text: str) -> Lifted:
        network = str(parse_network(network_text))
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            result = await conn.execute(
                update(blocked_networks)
                .where(blocked_networks.c.network == network, _active(now))
                .values(lifted_at=now, lifted_by=actor)
            )
        if not result.rowcount:
            raise NotFound("not_blocked", f"{network} is not on the deny list")
        log.warning("network unblocked", extra={"fields": {"network": network, "actor": actor}})
        await self.refresh()
        return Lifted(network=network)

    async def set_mode(self, actor: str, mode: str) -> ModeSet:
        if mode not in MODES:
            raise Invalid("invalid_mode", f"rate-limit mode must be one of {', '.join(MODES)}")
        row = {"name": "rate_limit", "value": mode, "set_by": actor, "set_at": self.clock.now_ms()}
        async with self.db.write() as conn:
            await put(conn, edge_switches, row, ["name"])
        log.warning("rate-limit mode set", extra={"fields": {"mode": mode, "actor": actor}})
        await self.refresh()
        return ModeSet(mode=mode)

    # -- failed logins -------------------------------------------------------------------------

    async def record_failed_login(self, ip: str) -> int:
        """Counts one failure from ``ip``; returns its failures in this clock minute, on every
        replica together (what an automatic block is decided on)."""
        now = self.clock.now_ms()
        minute = now // 60_000
        async with self.db.write() as conn:
            await bump(conn, login_failures, {"ip": ip, "minute": minute}, "count")
            count = await conn.scalar(
                select(login_failures.c.count).where(
                    login_failures.c.ip == ip, login_failures.c.minute == minute
                )
            )
            if minute % 10 == 0:  # keep a day: prune now and then, not on every failure
                await conn.execute(
                    login_failures.delete().where(
                        login_failures.c.minute < (now - FAILURES_KEPT_MS) // 60_000
                    )
                )
        return int(count or 0)

    async def report(self, window_s: int) -> SecurityReport:
        """What the security diagnosis reads: who fails to log in, who is blocked, which mode."""
        now = self.clock.now_ms()
        since = (now - window_s * 1000) // 60_000
        async with self.db.read() as conn:
            failures = await conn.execute(
                select(
                    login_failures.c.ip,
                    func.sum(login_failures.c.count).label("failures"),
                    func.max(login_failures.c.minute).label("last_minute"),
                )
                .where(login_failures.c.minute >= since)
                .group_by(login_failures.c.ip)
                .order_by(func.sum(login_failures.c.count).desc())
                .limit(50)
            )
            blocks = await conn.execute(
                select(blocked_networks).where(_active(now)).order_by(blocked_networks.c.id)
            )
            mode_row = (
                await conn.execute(
                    select(edge_switches).where(edge_switches.c.name == "rate_limit")
                )
            ).first()
            failed = [
                FailedLogins(ip=r.ip, count=int(r.failures), last_at=int(r.last_minute) * 60_000)
                for r in failures
            ]
            blocked = [
                BlockedNetwork(
                    network=r.network,
                    reason=r.reason,
                    blocked_by=r.blocked_by,
                    blocked_at=r.blocked_at,
                    expires_at=r.expires_at,
                )
                for r in blocks
            ]
        return SecurityReport(
            window_s=window_s,
            failed_logins=failed,
            failed_logins_total=sum(f.count for f in failed),
            blocked=blocked,
            rate_limit=RateLimitState(
                mode=mode_row.value if mode_row else "normal",
                set_by=mode_row.set_by if mode_row else None,
                set_at=mode_row.set_at if mode_row else None,
                emergency_requests_per_min=self.limiter.per_minute,
            ),
        )


def _active(now: int) -> Any:
    return and_(
        blocked_networks.c.lifted_at.is_(None),
        or_(blocked_networks.c.expires_at.is_(None), blocked_networks.c.expires_at > now),
    )
