"""The engine, its connection pool, and what the runbook needs to see of that pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import event, exc, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from secureconnect.errors import Conflict, Invalid, Unavailable
from secureconnect.store.credentials import VERIFIER

log = logging.getLogger("secureconnect.store")
DURABILITY = {
    "sync": (
        "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'",
        "ALTER SYSTEM SET synchronous_commit = 'on'",
    ),
    "local": ("ALTER SYSTEM SET synchronous_commit = 'local'",),
}


class StoreUnavailable(Unavailable):
    """The database cannot serve right now (down, or every pooled connection busy): a 503."""


@dataclass(frozen=True)
class PoolStats:
    max_open: int
    in_use: int
    idle: int
    wait_count: int
    wait_seconds: float
    errors: dict[str, int]


Publish = Callable[[Sequence[str], dict[str, Any]], Awaitable[None]]


class Database:
    """One engine per process. SQLite writes are serialised in-process: SQLite has one writer.

    Events go out only after the commit that made them true (as Zulip's
    ``send_event_on_commit``): a write queues them with :meth:`publish_on_commit`, and
    :meth:`write` hands them to ``publish`` (the bus) once the transaction has committed; a
    rolled-back transaction publishes nothing.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 10.0,
        publish: Publish | None = None,
    ) -> None:
        self.url = url
        self._publish = publish
        self._outbox: dict[AsyncConnection, list[tuple[Sequence[str], dict[str, Any]]]] = {}
        self.is_sqlite = url.startswith("sqlite")
        self.max_open = pool_size + max_overflow
        self.engine: AsyncEngine = create_async_engine(
            url,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_pre_ping=not self.is_sqlite,
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._wait_count = 0
        self._wait_seconds = 0.0
        self._errors = {"db_pool_exhausted": 0, "store_unavailable": 0}
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for queries that change nothing."""
        async with self._connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits on exit: when this returns, the change is durable, and
        what it queued with :meth:`publish_on_commit` has been published, in queued order."""
        lock = self._write_lock or contextlib.nullcontext()
        outbox: list[tuple[Sequence[str], dict[str, Any]]] = []
        async with lock, self._connect() as conn:
            self._outbox[conn] = outbox
            try:
                async with conn.begin():
                    yield conn
            finally:
                del self._outbox[conn]
        if outbox and self._publish is not None:
            for topics, event in outbox:
                await self._publish(topics, event)

    def publish_on_commit(
        self, conn: AsyncConnection, topics: Sequence[str], event: dict[str, Any]
    ) -> None:
        """Publishes ``event`` to ``topics`` once the transaction ``conn`` belongs to commits."""
        try:
            self._outbox[conn].append((topics, event))
        except KeyError:
            raise RuntimeError(
                "publish_on_commit needs a connection from Database.write()"
            ) from None

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        pool = self.engine.sync_engine.pool
        saturated = pool.checkedout() >= self.max_open  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            try:
                conn = await self.engine.connect()
            finally:
                # Like Go's sql.DBStats.WaitCount: every wait counts, also one that timed out.
                if saturated:
                    self._wait_count += 1
                    self._wait_seconds += time.perf_counter() - started
        except exc.TimeoutError as error:
            self._errors["db_pool_exhausted"] += 1
            log.error(
                "db pool exhausted",
                extra={"fields": {"in_use": pool.checkedout(), "max_open": self.max_open}},  # type: ignore[attr-defined]
            )
            raise StoreUnavailable(
                "db_pool_exhausted", "every database connection is busy; try again shortly"
            ) from error
        except (exc.DBAPIError, OSError) as error:  # refused, reset, or login refused
            self._errors["store_unavailable"] += 1
            log.error("database unreachable", extra={"fields": {"error": type(error).__name__}})
            raise StoreUnavailable("store_unavailable", "the database is unreachable") from error
        try:
            yield conn
        except exc.DBAPIError as error:
            # The database went away during the query (restarted, failed over, the connection
            # cut): the same 503 as when it cannot be reached, not a 500. A constraint or a
            # syntax error is another DBAPIError and stays what it is.
            lost = error.connection_invalidated or isinstance(
                error, exc.OperationalError | exc.InterfaceError
            )
            if not lost:
                raise
            self._errors["store_unavailable"] += 1
            log.error("database lost mid-query", extra={"fields": {"error": type(error).__name__}})
            raise StoreUnavailable(
                "store_unavailable", "the database connection was lost; try again"
            ) from error
        finally:
            with contextlib.suppress(exc.DBAPIError, OSError):  # a dead connection is dropped
                await conn.close()

    async def close_idle(self) -> None:
        """Closes the pooled connections nobody is using; the pool opens new ones when next
        asked. Called once a crowd of sockets has gone: what each connection cached while it
        served the crowd (SQLite's prepared statements, the list of cursors it made) would
        otherwise pin the memory the crowd used (decision 0033). Nothing in use is touched,
        and a database that cannot be reached now is left for the next time."""
        pool: Any = self.engine.sync_engine.pool
        with contextlib.suppress(exc.SQLAlchemyError, OSError):
            for _ in range(pool.checkedin()):  # first in, first out: each one once
                async with self.engine.connect() as conn:
                    await conn.invalidate()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    def pool_stats(self) -> PoolStats:
        pool: Any = self.engine.sync_engine.pool
        return PoolStats(
            max_open=self.max_open,
            in_use=pool.checkedout(),
            idle=pool.checkedin(),
            wait_count=self._wait_count,
            wait_seconds=self._wait_seconds,
            errors=dict(self._errors),
        )

    async def describe(self) -> dict[str, Any]:
        """What the database diagnosis (runbook 23.7) reads: how fast a round trip is, whether
        this node is a primary, and the durability ("consistency level") in force."""
        started = time.perf_counter()
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            if self.is_sqlite:
                sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                level = await conn.scalar(text("PRAGMA synchronous"))
                journal = await conn.scalar(text("PRAGMA journal_mode"))
                return {
                    "backend": "sqlite",
                    "latency_ms": latency_ms,
                    "role": "primary",
                    "consistency": {
                        "synchronous": sync.get(int(level or 0), str(level)),
                        "journal_mode": str(journal),
                    },
                    "replicas": 0,
                }
            commit = await conn.scalar(text("SHOW synchronous_commit"))
            standbys = await conn.scalar(text("SHOW synchronous_standby_names"))
            recovery = await conn.scalar(text("SELECT pg_is_in_recovery()"))
            node = (
                await conn.execute(
                    text("SELECT host(inet_server_addr()) AS host, inet_server_port() AS port")
                )
            ).one()
            rows = (
                await conn.execute(
                    text(
                        "SELECT application_name, host(client_addr) AS address, state,"
                        " sync_state,"
                        " COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)"
                        "   AS lag_bytes,"
                        " COALESCE(EXTRACT(EPOCH FROM replay_lag) * 1000, 0) AS lag_ms"
                        " FROM pg_stat_replication ORDER BY application_name"
                    )
                )
            ).all()
            return {
                "backend": "postgresql",
                "latency_ms": latency_ms,
                "role": "standby" if recovery else "primary",
                "node": f"{node.host}:{node.port}" if node.host else "local socket",
                "consistency": {
                    "synchronous_commit": str(commit),
                    "synchronous_standby_names": str(standbys or ""),
                },
                "replicas": len(rows),
                "standbys": [
                    {
                        "name": r.application_name,
                        "address": r.address or "local",
                        "state": r.state,
                        "sync": r.sync_state,
                        "lag_bytes": int(r.lag_bytes or 0),
                        "lag_ms": round(float(r.lag_ms or 0), 1),
                    }
                    for r in rows
                ],
            }

    async def set_durability(self, mode: str) -> None:
        """The commit durability of the whole database (runbook 23.7), on its primary:
        ``sync``, every commit waits until a standby has it (``synchronous_commit = on`` with
        ``synchronous_standby_names = 'ANY 1 (*)'``: what LOCAL_QUORUM gave); ``local``, commits
        wait for the primary's own disk only (the emergency LOCAL_ONE, while a standby is lost
        and writes would otherwise wait for it). Needs ALTER SYSTEM on those two settings and
        pg_reload_conf(), or a superuser."""
        self._require_postgresql()
        if mode not in DURABILITY:
            raise Invalid("invalid_mode", f"mode is one of {', '.join(DURABILITY)}")
        statements = DURABILITY[mode]
        try:
            async with self._connect() as connection:
                # ALTER SYSTEM runs outside a transaction.
                conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
                if await conn.scalar(text("SELECT pg_is_in_recovery()")):
                    raise Conflict("not_primary", "the services reach a standby, not a primary")
                if mode == "sync":
                    streaming = await conn.scalar(
                        text("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                    )
                    if not streaming:
                        raise Conflict(
                            "no_standby",
                            "no standby streams from this primary: every write would wait for "
                            "one; rebuild a standby first (pg_basebackup), then switch",
                        )
                for statement in statements:
                    await conn.execute(text(statement))
                await conn.execute(text("SELECT pg_reload_conf()"))
        except exc.DBAPIError as error:
            if "permission denied" in str(error.orig):
                raise Conflict(
                    "not_permitted",
                    "the services' database role may not change durability: GRANT ALTER SYSTEM "
                    "ON PARAMETER synchronous_commit, synchronous_standby_names and EXECUTE ON "
                    "FUNCTION pg_reload_conf() to it (runbook 23.7)",
                ) from error
            raise

    async def set_own_password(self, verifier: str) -> str:
        """Gives the role this store connects as a new password, as a SCRAM verifier (see
        ``store.credentials``), and returns the role's name. Open connections keep working; a
        new one needs the new password, so the services restart with it next (runbook 23.8)."""
        self._require_postgresql()
        if not VERIFIER.match(verifier):
            raise Invalid("invalid_verifier", "verifier must be a SCRAM-SHA-256 verifier")
        async with self.write() as conn:
            role = await conn.scalar(text("SELECT current_user"))
            # A role may change its own password. The verifier's alphabet holds no quote (the
            # pattern above), and a driver-level statement leaves its colons alone.
            await conn.exec_driver_sql(f"ALTER ROLE CURRENT_USER PASSWORD '{verifier}'")
        return str(role)

    async def accepts_password(self, password: str) -> bool:
        """Whether PostgreSQL lets this store's role in with ``password``: once a password has
        been changed, the old one must be refused (a server that trusts every connection, as
        ``trust`` in pg_hba.conf does, accepts it, and that is worth knowing)."""
        self._require_postgresql()
        url = make_url(self.url)
        try:
            conn = await asyncpg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                password=password,
                database=url.database,
                timeout=10,
            )
        except asyncpg.InvalidPasswordError:
            return False
        except (OSError, TimeoutError, asyncpg.PostgresError) as error:
            raise StoreUnavailable(
                "store_unavailable", f"cannot reach the database: {error}"
            ) from error
        await conn.close()
        return True

    def _require_postgresql(self) -> None:
        if self.is_sqlite:
            raise Conflict("not_postgresql", "the embedded SQLite database has no password")

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes a commit survive power loss,
    # which is what "acknowledged only after it is durable" promises. Each pooled connection
    # keeps a page cache of its own: 256 KiB rather than SQLite's 2 MiB, since up to twenty of
    # them cache the same hot pages that the operating system already caches once (decision
    # 0033: the room-of-100 benchmark ran as fast, and a crowd signing in grew the server less).
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=10000",
        "PRAGMA cache_size=-256",
    ):
        cursor.execute(pragma)
    cursor.close()
