from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from secureconnect.app import create_app
from secureconnect.client import Client
from secureconnect.clock import ManualClock
from secureconnect.config import Settings
from secureconnect.services import Services, services_of
from tests.helpers import signed_up, unique
from tests.server import RedisProcess, ServerProcess, run_in_thread

# Settings that make the failure paths quick to reach in tests.
FAST = {
    "SECURECONNECT_WS_AUTH_TIMEOUT_S": "1",
    "SECURECONNECT_WS_SEND_QUEUE": "64",
    "SECURECONNECT_MAX_REQUEST_BYTES": "200000",
}


# The quick run (-m "not slow") tests the embedded default; the full run tests both.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]
PG_ADMIN = os.environ.get("SECURECONNECT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def backend_env(backend: str) -> tuple[dict[str, str], str | None]:
    """Settings for a server on ``backend``; for PostgreSQL a fresh database (dropped after)."""
    if backend == "sqlite":
        return dict(FAST), None
    name = f"sc_test_{secrets.token_hex(6)}"
    try:
        _pg(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as error:
        if in_ci():
            raise RuntimeError(f"PostgreSQL is required in CI: {error}") from error
        pytest.skip(f"PostgreSQL not reachable: {error}")
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return {**FAST, "SECURECONNECT_DATABASE_URL": f"{base}/{name}"}, name


def drop_database(name: str | None) -> None:
    if name is not None:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg(statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_in_thread(run())


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per backend, shared by the tests that do not stop it (fresh usernames each)."""
    env, database = backend_env(request.param)
    proc = ServerProcess(tmp_path_factory.mktemp(f"server-{request.param}"), env).start()
    yield proc
    proc.stop()
    drop_database(database)


@pytest.fixture(params=BACKENDS)
def own_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server this test may stop, crash and restart (its data survives restarts)."""
    env, database = backend_env(request.param)
    proc = ServerProcess(tmp_path / "server", env)
    proc.data_dir.mkdir()
    yield proc
    proc.stop()
    drop_database(database)


@pytest.fixture(scope="session")
def calls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server running the real Janus and coturn, with calls that ring for 3 s and drop a
    silent device after 4 s; shared by the call tests (fresh users each)."""
    for binary in ("janus", "turnserver"):
        if shutil.which(binary) is None:
            if in_ci():
                pytest.fail(f"{binary} is not installed (apt-get install janus coturn)")
            pytest.skip(f"{binary} is not installed")
    env = {
        **FAST,
        "SECURECONNECT_SFU": "true",
        "SECURECONNECT_TURN_PORT": "0",
        "SECURECONNECT_JANUS_RTP_PORTS": "22000-22199",
        "SECURECONNECT_TURN_RELAY_PORTS": "22200-22299",
        "SECURECONNECT_CALL_RING_S": "3",
        "SECURECONNECT_CALL_HEARTBEAT_TIMEOUT_S": "4",
    }
    proc = ServerProcess(tmp_path_factory.mktemp("calls"), env).start().wait_media()
    yield proc
    proc.stop()


UserFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_user() -> AsyncIterator[UserFactory]:
    """Registers and logs in a new user on a server; the client is closed after the test."""
    clients: list[Client] = []

    async def make(srv: ServerProcess, prefix: str = "user") -> Client:
        client = Client(srv.url)
        clients.append(client)
        return await signed_up(client, unique(prefix))

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def user(make_user: UserFactory, server: ServerProcess) -> Callable[[str], Awaitable[Client]]:
    def make(prefix: str = "user") -> Awaitable[Client]:
        return make_user(server, prefix)

    return make


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass
class InProcess:
    """The whole app in this test's process, over a temporary SQLite file, on a clock that moves
    only when the test says so: for rules, which need no socket, no subprocess and no waiting
    (a test here takes milliseconds). Admin: "oncall"; incidents verify for 2 s; tokens live
    60 s. (The client address is the transport's: ``httpx.ASGITransport(client=...)``.)"""

    app: FastAPI
    services: Services
    clock: ManualClock

    def client(self) -> Client:
        return Client("http://in-process", transport=httpx.ASGITransport(app=self.app))


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[InProcess]:
    settings = Settings(
        data_dir=tmp_path,
        admins=["oncall"],
        token_ttl_s=60,
        incident_verify_s=2,
        guard_refresh_s=3600,
        reminder_check_s=3600,
        sfu=False,
        media_probe_port=0,
        # The manual clock stands still: buckets would never refill (test_rate_limits has them).
        rate_limits=False,
    )
    clock = ManualClock()
    app = create_app(settings, clock)
    async with app.router.lifespan_context(app):
        yield InProcess(app, services_of(app), clock)


@pytest.fixture
async def in_process_user(in_process: InProcess) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Registers and logs in a new user on the in-process app."""
    clients: list[Client] = []

    async def make(prefix: str = "user") -> Client:
        client = in_process.client()
        clients.append(client)
        return await signed_up(client, unique(prefix))

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server of the test's own."""
    if not shutil.which("redis-server"):
        if in_ci():
            pytest.fail("redis-server is required in CI")
        pytest.skip("redis-server not installed")
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def replicas_on_redis(
    tmp_path: Path, redis_server: RedisProcess
) -> Iterator[Callable[..., list[ServerProcess]]]:
    """Starts replicas on one fresh PostgreSQL database and the test's Redis, with ``env``."""
    started: list[ServerProcess] = []
    databases: list[str | None] = []

    def start(env: dict[str, str] | None = None, count: int = 2) -> list[ServerProcess]:
        base, database = backend_env("postgresql")
        databases.append(database)
        base.update({**(env or {}), "SECURECONNECT_REDIS_URL": redis_server.url})
        procs = []
        for _ in range(count):
            data = tmp_path / f"replica{len(started)}"
            data.mkdir()
            proc = ServerProcess(data, base)
            started.append(proc)
            procs.append(proc.start())
        return procs

    yield start
    for proc in started:
        proc.stop()
    for database in databases:
        drop_database(database)
