"""Prometheus metrics. Names follow the runbook's charts where it names one.

The database pool is exported as ``go_sql_connections_max_open`` / ``..._in_use`` / ``..._idle`` /
``..._wait_count_total``: the runbook (23.5 step 3) and its Grafana chart use those names, and
keeping them means the on-call engineer's query works unchanged. See docs/decisions/0003.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from secureconnect.store import PoolStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One registry per app, so that several apps in one test process do not collide."""

    def __init__(self, role: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"role": role}
        self.requests = Counter(
            "secureconnect_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "secureconnect_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.websockets = Gauge(
            "secureconnect_websocket_connections",
            "Open realtime WebSocket connections.",
            registry=self.registry,
        )
        self.active_users = Gauge(
            "secureconnect_active_users",
            "Distinct users with at least one open realtime connection.",
            registry=self.registry,
        )
        self.messages = Counter(
            "secureconnect_messages_accepted_total",
            "Messages made durable and acknowledged to the sender.",
            registry=self.registry,
        )
        self.ws_closed = Counter(
            "secureconnect_websocket_closed_total",
            "Realtime connections closed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.failed_logins = Counter(
            "secureconnect_failed_logins_total",
            "Login attempts refused: wrong username, password or code, or throttled.",
            registry=self.registry,
        )
        self.auto_blocks = Counter(
            "secureconnect_auto_blocks_total",
            "Addresses put on the deny list by themselves, for too many failed logins.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "secureconnect_rate_limited_total",
            "Requests refused by the normal-mode rate limits, per user or per address.",
            ["scope"],
            registry=self.registry,
        )
        self.logins_throttled = Counter(
            "secureconnect_logins_throttled_total",
            "Logins refused without checking the password: the account or the address waits.",
            ["scope"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "secureconnect_ready",
            "1 when this replica reaches the dependency (store, bus), 0 when it does not.",
            ["check"],
            registry=self.registry,
        )
        self.info = Gauge(
            "secureconnect_build_info",
            "Constant 1, labelled with the role.",
            ["role"],
            registry=self.registry,
        )
        self.info.labels(**labels).set(1)
        self.calls_started = Counter(
            "secureconnect_calls_started_total", "Calls started.", registry=self.registry
        )
        self.calls_ended = Counter(
            "secureconnect_calls_ended_total",
            "Calls ended, by outcome (ended, missed, declined).",
            ["outcome"],
            registry=self.registry,
        )
        self.ice_connected = Counter(
            "secureconnect_ice_connected_total",
            "Peer connections (publisher or subscriber) Janus reported up.",
            registry=self.registry,
        )
        self.ice_failures = Counter(
            "secureconnect_ice_failures_total",
            "Peer connections Janus hung up because ICE failed.",
            registry=self.registry,
        )
        self.media_decrypt_failures = Counter(
            "secureconnect_media_decrypt_failures_total",
            "Media frames clients reported they could not decrypt (a count, no content).",
            registry=self.registry,
        )

    def server_errors(self) -> int:
        """5xx answers this process has given: what "stable" is measured against."""
        total = 0.0
        for family in self.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("status", "").startswith(
                    "5"
                ):
                    total += sample.value
        return int(total)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def watch_pool(self, stats: Callable[[], PoolStats]) -> None:
        self.registry.register(_PoolCollector(stats))

    def watch_sfu(self, up: Callable[[], bool]) -> None:
        self.janus_up = Gauge(
            "secureconnect_janus_up",
            "1 while this replica's Janus (the SFU) answers its API, 0 while it is away.",
            registry=self.registry,
        )
        self.janus_up.set_function(lambda: 1.0 if up() else 0.0)

    def watch_suggest(self, ok: Callable[[], bool]) -> None:
        """Suggested replies, in the roles that serve the web client: the pack, and what clients
        report of it (counts only; no text, no conversation)."""
        self.suggest_pack_ok = Gauge(
            "secureconnect_suggest_pack_ok",
            "1 while the suggestion pack is present, matches its hash and is served; 0 otherwise.",
            registry=self.registry,
        )
        self.suggest_pack_ok.set_function(lambda: 1.0 if ok() else 0.0)
        self.suggest_pack_info = Gauge(
            "secureconnect_suggest_pack_info",
            "The suggestion pack this replica serves (always 1).",
            ["version", "sha256"],
            registry=self.registry,
        )
        self.suggest_served = Counter(
            "secureconnect_suggest_pack_served_total",
            "Suggestion packs handed to web clients.",
            registry=self.registry,
        )
        self.suggest_shown = Counter(
            "secureconnect_suggest_shown_total",
            "Rows of suggested replies shown, as clients report them.",
            registry=self.registry,
        )
        self.suggest_taken = Counter(
            "secureconnect_suggest_taken_total",
            "Suggested replies a person tapped, by the chip's position (1-3).",
            ["position"],
            registry=self.registry,
        )
        self.suggest_load_failures = Counter(
            "secureconnect_suggest_load_failures_total",
            "Suggestion packs that a client could not load or verify.",
            registry=self.registry,
        )

    def watch_turn(self, up: Callable[[], bool]) -> None:
        self.turn_up = Gauge(
            "secureconnect_turn_up",
            "1 while the coturn this replica runs is up, 0 while it is away: calls then get no "
            "TURN server, and clients behind strict NATs cannot reach the SFU.",
            registry=self.registry,
        )
        self.turn_up.set_function(lambda: 1.0 if up() else 0.0)

    def watch_calls(self, counts: Callable[[], CallCounts]) -> None:
        self.registry.register(_CallCollector(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class CallCounts:
    """What this replica's Janus carries now."""

    calls: int
    participants: int
    publishers: int
    subscribers: int
    forwarded_streams: int


class _CallCollector(Collector):
    def __init__(self, counts: Callable[[], CallCounts]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Metric]:
        now = self.counts()
        for name, value, text in (
            ("calls", now.calls, "Calls live on this replica's SFU."),
            ("call_participants", now.participants, "Devices in those calls."),
            ("call_publishers", now.publishers, "Devices sending media."),
            ("call_subscribers", now.subscribers, "Devices receiving media."),
            ("call_forwarded_streams", now.forwarded_streams, "Streams the SFU forwards."),
        ):
            yield GaugeMetricFamily(f"secureconnect_{name}", text, value=value)


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self.stats()
        yield GaugeMetricFamily(
            "go_sql_connections_max_open", "Most database connections the pool opens.", s.max_open
        )
        yield GaugeMetricFamily(
            "go_sql_connections_in_use", "Database connections checked out now.", s.in_use
        )
        yield GaugeMetricFamily("go_sql_connections_idle", "Idle pooled connections.", s.idle)
        yield CounterMetricFamily(
            "go_sql_connections_wait_count",
            "Times a request had to wait for a free connection.",
            s.wait_count,
        )
        errors = CounterMetricFamily(
            "secureconnect_store_errors",
            "Requests the store could not serve, by reason (db_pool_exhausted, store_unavailable).",
            labels=["code"],
        )
        for code, count in sorted(s.errors.items()):
            errors.add_metric([code], count)
        yield errors
        yield CounterMetricFamily(
            "go_sql_connections_wait_duration_seconds",
            "Total time spent waiting for a free connection.",
            s.wait_seconds,
        )
