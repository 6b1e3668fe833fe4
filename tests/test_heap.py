"""The server's memory after a crowd of sockets has gone (issue 10, decision 0033): it runs on
the C library's allocator, and it closes the database connections nobody is using so that what
they cached for the crowd goes too. How much comes back is measured by `bench/fanout.py --idle`."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from secureconnect.store import Database
from tests.conftest import BACKENDS, FAST, PG_ADMIN, backend_env, drop_database
from tests.server import ServerProcess


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


@pytest.mark.parametrize("chosen", [None, "pymalloc"])
def test_the_server_runs_on_malloc_unless_the_operator_chose(tmp_path, chosen) -> None:
    env = dict(FAST)
    if chosen is not None:
        env["PYTHONMALLOC"] = chosen
    srv = ServerProcess(tmp_path, env).start()
    try:
        assert srv.proc is not None
        # The process started is the one serving (re-executed in place, so a supervisor's
        # PID still points at the server), with the allocator chosen.
        assert srv.proc.poll() is None
        assert environment_of(srv.proc.pid)["PYTHONMALLOC"] == (chosen or "malloc")
    finally:
        srv.stop()


async def _open_connections(db: Database, count: int) -> None:
    """``count`` pooled connections, opened together so that each is a connection of its own."""
    started = asyncio.Event()
    waiting = 0

    async def hold() -> None:
        nonlocal waiting
        async with db.read() as conn:
            await conn.execute(text("SELECT 1"))
            waiting += 1
            if waiting == count:
                started.set()
            await started.wait()

    await asyncio.gather(*(hold() for _ in range(count)))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_idle_database_connections_close_and_come_back_when_needed(tmp_path, backend) -> None:
    if backend == "sqlite":
        url, name = f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}", None
    else:
        env, name = backend_env("postgresql")
        url = env["SECURECONNECT_DATABASE_URL"]

    async def open_now() -> int:
        """Connections really open: SQLite's worker threads, PostgreSQL's backends."""
        if name is None:
            return sum("_connection_worker" in t.name for t in threading.enumerate())
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            return int(await admin.fetchval(query, name))
        finally:
            await admin.close()

    db = Database(url)
    try:
        before = await open_now()
        await _open_connections(db, 3)
        assert await open_now() == before + 3

        # One connection stays in use, inside a transaction, while the idle ones are closed.
        async with db.write() as busy:
            await busy.execute(text("CREATE TABLE IF NOT EXISTS kept (n INTEGER)"))
            await db.close_idle()
            assert db.pool_stats().in_use == 1
            await busy.execute(text("INSERT INTO kept VALUES (1)"))
        assert await open_now() == before + 1  # the one that was busy; the idle ones are gone

        # Asked again, the pool opens what it needs, and the busy one's write was kept.
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM kept"))).scalar() == 1
    finally:
        await db.close()
        drop_database(name)
