"""The service container: one instance per process, built from the settings.

It sits below the routes and above the domains: it imports services, the store, the bus, the
settings and the metrics, never a router, so that a route can depend on it without a circle.
Routes take it as ``services: ServicesDep`` (see :mod:`secureconnect.edge.deps`); the
WebSocket route, a plain Starlette route, reads it with :func:`services_of`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from argon2 import PasswordHasher
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from secureconnect.accounts.email import EmailService
from secureconnect.accounts.service import AccountService
from secureconnect.accounts.totp import SecretBox, TotpService, server_key
from secureconnect.blobs.service import BlobService
from secureconnect.blobs.storage import storage_from
from secureconnect.bus import Bus, InProcessBus
from secureconnect.bus.redis import RedisBus
from secureconnect.chat.realtime import Hub
from secureconnect.chat.service import ChatService
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.config import Settings
from secureconnect.errors import Problem
from secureconnect.guard.limits import MemoryBuckets, Rate, RateLimits, RedisBuckets
from secureconnect.guard.service import GuardService
from secureconnect.guard.throttle import LoginThrottle, MemoryCounts, RedisCounts, ThrottlePolicy
from secureconnect.incidents.platform import PrometheusCheck
from secureconnect.incidents.service import IncidentService, Severities
from secureconnect.incidents.status import StatusPage
from secureconnect.keys.service import InboxService, KeyService
from secureconnect.mail import Mailer
from secureconnect.ops.metrics import Metrics
from secureconnect.ops.service import DeployLog
from secureconnect.profiles import images
from secureconnect.profiles.service import ProfileService
from secureconnect.store import Database, StoreUnavailable
from secureconnect.suggest.service import SuggestService
from secureconnect.video.schemas import IceServer
from secureconnect.video.service import CallService
from secureconnect.video.sfu import JanusSupervisor, local_addresses
from secureconnect.video.turn import TurnSupervisor, ice_servers

log = logging.getLogger("secureconnect.accounts")
AUTO_BLOCKER = "secureconnect (automatic block)"


@dataclass
class Services:
    """Everything a request handler may use."""

    settings: Settings
    db: Database
    bus: Bus
    metrics: Metrics
    accounts: AccountService
    chat: ChatService
    keys: KeyService
    inbox: InboxService
    hub: Hub
    incidents: IncidentService
    status: StatusPage
    guard: GuardService
    limits: RateLimits | None
    deploys: DeployLog
    profiles: ProfileService
    sfu: JanusSupervisor | None = None  # in the roles that serve calls
    turn: TurnSupervisor | None = None  # coturn, when no external TURN server is configured
    calls: CallService | None = None
    suggest: SuggestService | None = None  # in the roles that serve the web client
    blobs: BlobService | None = None  # attachments, where chat is served
    draining: bool = field(default=False)


CHECK_TIMEOUT_S = 2.0


async def reachable(db: Database, bus: Bus) -> dict[str, str]:
    """``ok`` or ``failed: <reason>`` for the store and the bus: the one reachability check that
    readiness, the metrics, incident verification and the status page all read."""
    checks: dict[str, str] = {}
    for name, probe in (("store", db.ping), ("bus", bus.ping)):
        try:
            await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as error:  # any failure means "not ready"; the reason is shown
            checks[name] = f"failed: {type(error).__name__}"
    return checks


def build_services(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> Services:
    """``clock``: what every service stamps and expires by (a test may move it)."""
    bus: Bus = (
        RedisBus(settings.redis_url.get_secret_value()) if settings.redis_url else InProcessBus()
    )
    db = Database(
        settings.effective_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        publish=bus.publish,
    )
    metrics = Metrics(settings.role)
    metrics.watch_pool(db.pool_stats)
    chat = ChatService(
        db,
        bus,
        max_message_bytes=settings.max_message_bytes,
        history_page_max=settings.history_page_max,
        clock=clock,
    )
    guard = GuardService(
        db, settings.guard_refresh_s, settings.emergency_requests_per_min, clock=clock
    )

    async def failed_login(address: str) -> None:
        metrics.failed_logins.inc()
        try:
            count = await guard.record_failed_login(address)
            threshold = settings.auto_block_failures_per_min
            if threshold and count >= threshold and not guard.blocked(address):
                await auto_block(address, count)
        except StoreUnavailable:  # counting must not turn "wrong password" into a 503
            log.warning("could not count a failed login")

    async def auto_block(address: str, count: int) -> None:
        """Puts an address that fails too many logins on the deny list for a while, and says so
        on the open incident. Never a proxy the platform trusts: its address is everyone's."""
        if _among(address, settings.trusted_proxies):
            return
        reason = f"{count} failed logins within a minute (automatic)"
        try:
            done = await guard.block(AUTO_BLOCKER, address, reason, settings.auto_block_s)
        except Problem:  # not an address ("-"): nothing to block
            return
        if done.already:
            return
        metrics.auto_blocks.inc()
        open_ones = await incidents.list()
        if len(open_ones) == 1:  # as the CLI's mitigations do: only when it is clear which
            await incidents.note(
                AUTO_BLOCKER,
                str(open_ones[0].number),
                f"blocked {done.network} for {settings.auto_block_s} s: {reason}",
                kind="action",
            )

    memory_buckets = MemoryBuckets(clock)
    buckets: MemoryBuckets | RedisBuckets = memory_buckets
    if settings.redis_url:
        buckets = RedisBuckets(settings.redis_url.get_secret_value(), memory_buckets)
    limits = RateLimits(
        buckets,
        per_user=Rate(settings.rate_limit_per_user_min, settings.rate_limit_per_user_min),
        per_address=Rate(settings.rate_limit_per_address_min, settings.rate_limit_per_address_min),
        registrations=Rate(
            settings.registrations_per_address_hour / 60, settings.registrations_per_address_hour
        ),
        on_refused=lambda scope: metrics.rate_limited.labels(scope=scope).inc(),
    )
    memory_counts = MemoryCounts(clock)
    counts: MemoryCounts | RedisCounts = memory_counts
    if settings.redis_url:
        counts = RedisCounts(settings.redis_url.get_secret_value(), memory_counts)
    throttle = LoginThrottle(
        counts,
        account=ThrottlePolicy(
            settings.login_free_failures,
            settings.login_max_wait_s,
            settings.login_failures_per_hour,
        ),
        address=ThrottlePolicy(settings.login_free_failures_per_address, settings.login_max_wait_s),
        clock=clock,
        on_refused=lambda scope: metrics.logins_throttled.labels(scope=scope).inc(),
    )
    totp = None
    if settings.role in ("all", "api-gateway"):  # where logins are
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        totp = TotpService(db, SecretBox(server_key(secret, settings.data_dir)), clock)
    mailer = Mailer(
        settings.notify_smtp_host, settings.notify_smtp_port, settings.notify_email_from
    )
    accounts = AccountService(
        db,
        settings.token_ttl_s,
        on_new_device=chat.start_device,
        on_failed_login=failed_login,
        clock=clock,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        throttle=throttle if settings.login_throttle else None,
        totp=totp,
        email=EmailService(db, mailer, clock),
    )
    hub = Hub(bus, metrics, chat)
    if isinstance(bus, RedisBus):
        bus.on_reconnect.append(hub.resync_all)

    async def health() -> tuple[bool, int]:
        """(store and bus reachable, server errors so far), for incidents and the status page."""
        checks = await reachable(db, bus)
        return all(v == "ok" for v in checks.values()), metrics.server_errors()

    severities = Severities.load(
        settings.incident_verify_s,
        settings.incident_update_every_s,
        settings.incident_stakeholders_after_s,
    )
    platform = PrometheusCheck(settings.prometheus_url) if settings.prometheus_url else None
    incidents = IncidentService(db, severities, health, platform, clock=clock)
    sfu = _sfu(settings, metrics)
    turn = _turn(settings) if sfu is not None else None
    if turn is not None:
        metrics.watch_turn(lambda: turn.state == "up")

    def ice(user_id: str) -> list[IceServer]:
        """TURN credentials for one user, from the external server's secret or our coturn's."""
        ttl = settings.turn_credential_ttl_s
        if settings.turn_urls and settings.turn_secret is not None:
            urls = [u.strip() for u in settings.turn_urls.split(",") if u.strip()]
            secret = settings.turn_secret.get_secret_value()
            return ice_servers(urls, secret, user_id, ttl, clock.now_ms() / 1000)
        if turn is not None and turn.state == "up":
            return ice_servers(turn.urls, turn.secret, user_id, ttl, clock.now_ms() / 1000)
        return []

    calls = (
        CallService(
            db,
            bus,
            chat,
            sfu,
            ice,
            metrics,
            ring_s=settings.call_ring_s,
            heartbeat_timeout_s=settings.call_heartbeat_timeout_s,
            clock=clock,
            # Replicas on one machine share a host name: the port tells them apart.
            owner=f"{socket.gethostname()}:{settings.port}",
            url=settings.internal_url or settings.effective_public_url,
            record_dir=settings.janus_record_dir,
        )
        if settings.role in ("all", "video-service")
        else None
    )
    if calls is not None:
        metrics.watch_calls(calls.counts)
    suggest = (
        SuggestService(
            settings.suggest_dir or Path(str(resources.files("secureconnect.suggest"))), metrics
        )
        if settings.role in ("all", "api-gateway")
        else None
    )
    blobs = _blobs(settings, db, clock) if settings.role in ("all", "chat-service") else None
    return Services(
        settings=settings,
        db=db,
        bus=bus,
        metrics=metrics,
        accounts=accounts,
        chat=chat,
        keys=KeyService(db, clock),
        inbox=InboxService(db, clock),
        hub=hub,
        incidents=incidents,
        status=StatusPage(
            db,
            incidents,
            health,
            platform,
            _video_state(settings, sfu),
            (lambda: suggest.check().ok) if suggest is not None else None,
            _every_minute(images.works) if settings.role in ("all", "api-gateway") else None,
        ),
        guard=guard,
        limits=limits if settings.rate_limits else None,
        deploys=DeployLog(db, clock),
        profiles=ProfileService(db, chat, clock),
        sfu=sfu,
        turn=turn,
        calls=calls,
        suggest=suggest,
        blobs=blobs,
    )


def _blobs(settings: Settings, db: Database, clock: Clock) -> BlobService:
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    storage = storage_from(
        settings.blob_store,
        settings.blob_dir or settings.data_dir / "blobs",
        settings.s3_endpoint_url,
        settings.s3_region,
        secret(settings.s3_access_key_id),
        secret(settings.s3_secret_access_key),
    )
    return BlobService(
        db,
        storage,
        settings.max_attachment_bytes,
        settings.attachment_quota_bytes,
        settings.blob_upload_ttl_s,
        clock,
    )


def _every_minute(check: Callable[[], bool]) -> Callable[[], bool]:
    """A check the public status page runs at most once a minute, whoever asks how often."""
    last: list[tuple[float, bool]] = []

    def cached() -> bool:
        now = time.monotonic()
        if not last or now - last[0][0] > 60:
            last[:] = [(now, check())]
        return last[0][1]

    return cached


def _sfu(settings: Settings, metrics: Metrics) -> JanusSupervisor | None:
    if not settings.sfu or settings.role not in ("all", "video-service"):
        return None
    sfu = JanusSupervisor(
        settings.janus_binary,
        settings.data_dir / "janus",
        settings.janus_rtp_ports,
        settings.janus_lib_dir,
        settings.media_address,
    )
    metrics.watch_sfu(lambda: sfu.state == "up")
    return sfu


def _video_state(settings: Settings, sfu: JanusSupervisor | None) -> Callable[[], str] | None:
    """The status page's Video component as this process sees it: down while its Janus is
    (or when Janus is not installed), "not available" when calls are switched off here."""
    if settings.role not in ("all", "video-service"):
        return None  # the gateway learns it from Prometheus
    if sfu is None:
        return lambda: "not_available"
    shown = {"up": "operational", "starting": "degraded"}
    return lambda: shown.get(sfu.state, "major_outage")


def _turn(settings: Settings) -> TurnSupervisor | None:
    if not settings.turn or settings.turn_urls:
        return None
    listen = settings.media_address or (
        settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    )
    # The SFU is the one private address a relay may reach.
    peers = (settings.media_address,) if settings.media_address else local_addresses()
    return TurnSupervisor(
        settings.turn_binary,
        settings.data_dir / "turn",
        listen,
        settings.turn_port,
        settings.turn_relay_ports,
        peers,
    )


def _among(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
    except ValueError:
        return False


def services_of(where: HTTPConnection | Starlette) -> Services:
    """The container of the app serving this request or WebSocket (or of this app)."""
    app = where.app if isinstance(where, HTTPConnection) else where
    services: Services = app.state.services
    return services
