"""The incident lifecycle. Every step is stamped and written to the timeline; closing is refused
until the platform has been healthy for the verification window after "resolved" (no new 5xx,
store and bus ready), unless someone gives a reason to override.

Beside it: Alertmanager's intake (:mod:`.alerts`), the reminder cadence (:mod:`.reminders`),
post-mortem drafts (:mod:`.postmortem`) and the public status page (:mod:`.status`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Invalid, NotFound
from secureconnect.incidents.models import incident_events, incidents
from secureconnect.incidents.platform import PrometheusCheck
from secureconnect.incidents.schemas import Incident, IncidentSummary, TimelineEntry
from secureconnect.store import Database
from secureconnect.store.base import new_id

ORDER = ["open", "acknowledged", "triaged", "mitigated", "resolved", "closed"]
STAMP = {
    "acknowledged": "acknowledged_at",
    "triaged": "triaged_at",
    "mitigated": "mitigated_at",
    "resolved": "resolved_at",
    "closed": "closed_at",
}

# (ready, server errors so far): what "healthy" is measured from.
HealthProbe = Callable[[], Awaitable[tuple[bool, int]]]


@dataclass(frozen=True)
class Severities:
    levels: dict[str, dict[str, Any]]
    verify_s: float
    update_every_s: float
    stakeholders_after_s: float

    @classmethod
    def load(
        cls,
        verify_s: float | None = None,
        update_every_s: float | None = None,
        stakeholders_after_s: float | None = None,
    ) -> Severities:
        raw = tomllib.loads(
            resources.files("secureconnect.incidents").joinpath("severities.toml").read_text()
        )
        levels = {k: v for k, v in raw.items() if isinstance(v, dict)}

        def pick(given: float | None, minutes: float) -> float:
            return given if given is not None else minutes * 60.0

        return cls(
            levels,
            pick(verify_s, raw["verify_minutes"]),
            pick(update_every_s, raw["update_every_minutes"]),
            pick(stakeholders_after_s, raw["stakeholders_after_minutes"]),
        )

    def check(self, severity: str) -> str:
        if severity not in self.levels:
            raise Invalid("invalid_severity", f"severity must be one of {', '.join(self.levels)}")
        return severity


class IncidentService:
    def __init__(
        self,
        db: Database,
        severities: Severities,
        health: HealthProbe,
        platform: PrometheusCheck | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.clock = clock
        self.severities = severities
        self.health = health
        self.platform = platform

    async def open(
        self,
        actor: str,
        title: str,
        severity: str,
        *,
        text: str = "",
        alert_key: str | None = None,
        since: int | None = None,
    ) -> Incident:
        """``since``: when the trouble began (an alert's ``startsAt``), if before now."""
        self.severities.check(severity)
        now = min(since, self.clock.now_ms()) if since else self.clock.now_ms()
        incident_id = new_id()
        async with self.db.write() as conn:
            number = (
                await conn.execute(select(func.coalesce(func.max(incidents.c.number), 0)))
            ).scalar_one() + 1
            await conn.execute(
                insert(incidents).values(
                    id=incident_id,
                    number=number,
                    title=title[:300],
                    severity=severity,
                    status="open",
                    alert_key=alert_key,
                    opened_at=now,
                    last_update_at=now,
                )
            )
            await log_event(
                self.clock,
                conn,
                incident_id,
                "opened",
                actor,
                f"{severity} opened: {title}" + (f". {text}" if text else ""),
                at=now,
            )
        return await self.get(str(number))

    async def advance(
        self, actor: str, ref: str, to: str, text: str = "", **fields: Any
    ) -> Incident:
        """Moves the incident forward to ``to`` (steps may be skipped, never undone)."""
        _, errors = await self.health() if to == "resolved" else (True, 0)
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            if ORDER.index(to) <= ORDER.index(row.status):
                raise Conflict("invalid_transition", f"incident is already {row.status}")
            now = self.clock.now_ms()
            values: dict[str, Any] = {"status": to, STAMP[to]: now, "last_update_at": now}
            if to == "acknowledged" and row.owner is None:
                values["owner"] = actor
            if to == "resolved":
                values["errors_at_resolve"] = errors
            values.update({k: v for k, v in fields.items() if v is not None})
            await conn.execute(update(incidents).where(incidents.c.id == row.id).values(**values))
            detail = ", ".join(
                f"{k.replace('_', ' ')}: {v}" for k, v in fields.items() if v is not None
            )
            await log_event(
                self.clock, conn, row.id, to, actor, "; ".join(p for p in (text, detail) if p) or to
            )
        return await self.get(ref)

    async def set_severity(self, actor: str, ref: str, severity: str, text: str = "") -> Incident:
        self.severities.check(severity)
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(severity=severity, last_update_at=self.clock.now_ms())
            )
            await log_event(
                self.clock,
                conn,
                row.id,
                "severity",
                actor,
                f"{row.severity} -> {severity}" + (f": {text}" if text else ""),
            )
        return await self.get(ref)

    async def note(self, actor: str, ref: str, text: str, kind: str = "update") -> Incident:
        if not text.strip():
            raise Invalid("empty_update", "an update needs some text")
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(last_update_at=self.clock.now_ms())
            )
            await log_event(self.clock, conn, row.id, kind, actor, text)
        return await self.get(ref)

    async def close(self, actor: str, ref: str, override_reason: str | None = None) -> Incident:
        ready, errors = await self.health()
        async with self.db.read() as conn:
            resolved_at = (await self._row(conn, ref)).resolved_at
        platform_problems = (
            await self.platform.problems_since((self.clock.now_ms() - resolved_at) / 1000)
            if self.platform is not None and resolved_at is not None
            else []
        )
        async with self.db.write() as conn:
            row = await self._row(conn, ref)
            if row.status != "resolved":
                raise Conflict("not_resolved", "resolve the incident before closing it")
            stable_s = (self.clock.now_ms() - row.resolved_at) / 1000
            problems = []
            if stable_s < self.severities.verify_s:
                problems.append(
                    f"only {stable_s:.0f}s of the {self.severities.verify_s:.0f}s "
                    f"verification window have passed since resolve"
                )
            if errors > (row.errors_at_resolve or 0):
                problems.append(
                    f"{errors - (row.errors_at_resolve or 0)} server errors since resolve"
                )
            if not ready:
                problems.append("the platform is not ready (store or bus failing)")
            problems += platform_problems
            if problems and not override_reason:
                raise Conflict(
                    "not_verified",
                    "; ".join(problems) + ". Wait, or close with an override reason.",
                )
            now = self.clock.now_ms()
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == row.id)
                .values(
                    status="closed",
                    verified_at=None if problems else now,
                    closed_at=now,
                    last_update_at=now,
                )
            )
            if problems:
                text = f"closed by override: {override_reason} ({'; '.join(problems)})"
            else:
                where = " on every replica (Prometheus)" if self.platform is not None else ""
                await log_event(
                    self.clock,
                    conn,
                    row.id,
                    "verified",
                    actor,
                    f"verified stable for {stable_s:.0f}s{where}: no new server errors, "
                    "store and bus ready",
                    at=now,
                )
                text = "closed"
            await log_event(self.clock, conn, row.id, "closed", actor, text, at=now)
        return await self.get(ref)

    async def list(self, include_closed: bool = False) -> list[IncidentSummary]:
        async with self.db.read() as conn:
            query = select(incidents).order_by(incidents.c.number.desc())
            if not include_closed:
                query = query.where(incidents.c.status != "closed")
            return [self._out(r) for r in await conn.execute(query)]

    async def get(self, ref: str) -> Incident:
        async with self.db.read() as conn:
            row = await self._row(conn, ref)
            events = await conn.execute(
                select(incident_events)
                .where(incident_events.c.incident_id == row.id)
                .order_by(incident_events.c.id)
            )
            timeline = [
                TimelineEntry(at=e.at, kind=e.kind, actor=e.actor, text=e.text) for e in events
            ]
        return Incident(**self._out(row).model_dump(), timeline=timeline)

    def _out(self, row: Any) -> IncidentSummary:
        level = self.severities.levels[row.severity]
        fields = IncidentSummary.model_fields.keys() - {"respond_within_minutes", "severity_name"}
        return IncidentSummary(
            **{name: getattr(row, name) for name in fields},
            respond_within_minutes=level["respond_minutes"],
            severity_name=level["name"],
        )

    async def _row(self, conn: AsyncConnection, ref: str) -> Any:
        query = select(incidents)
        query = (
            query.where(incidents.c.number == int(ref))
            if ref.isdigit() and len(ref) <= 18  # a number a 64-bit column can hold
            else query.where(incidents.c.id == ref)
        )
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("incident_not_found", f"no incident {ref}")
        return row


async def log_event(
    clock: Clock,
    conn: AsyncConnection,
    incident_id: str,
    kind: str,
    actor: str,
    text: str,
    at: int | None = None,
) -> None:
    """One line on an incident's timeline, in the caller's transaction."""
    await conn.execute(
        insert(incident_events).values(
            incident_id=incident_id, at=at or clock.now_ms(), kind=kind, actor=actor, text=text
        )
    )
