"""The servers a benchmark measures: the embedded default, or replicas on PostgreSQL + Redis."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server import ServerProcess

QUIET = {
    "SECURECONNECT_LOG_LEVEL": "WARNING",
    # Production's password hashing, not the test suite's cheaper one: the login burst measures it.
    "SECURECONNECT_ARGON2_MEMORY_KIB": "65536",
    "SECURECONNECT_ARGON2_PARALLELISM": "4",
}


@contextlib.contextmanager
def embedded(tmp: Path) -> Iterator[list[ServerProcess]]:
    server = ServerProcess(tmp, dict(QUIET)).start()
    try:
        yield [server]
    finally:
        server.stop()


@contextlib.contextmanager
def on_postgresql(tmp: Path, replicas: int) -> Iterator[list[ServerProcess]]:
    """``replicas`` servers on one fresh PostgreSQL database and a redis-server of their own."""
    from tests.conftest import backend_env, drop_database
    from tests.server import RedisProcess

    redis = RedisProcess()
    redis.start()
    env, database = backend_env("postgresql")
    env.update({"SECURECONNECT_REDIS_URL": redis.url, **QUIET})
    servers = []
    try:
        for n in range(replicas):
            (tmp / str(n)).mkdir()
            servers.append(ServerProcess(tmp / str(n), env).start())
        yield servers
    finally:
        for server in servers:
            server.stop()
        redis.stop()
        drop_database(database)


async def secure_device(url: str, name: str, folder: Path, password: str) -> Any:
    """A new user with a started end-to-end encrypted SDK device (its keys in ``folder``)."""
    from secureconnect.client import Client
    from secureconnect.client.devicestore import DeviceStore
    from secureconnect.client.secure import SecureClient

    client = Client(url, timeout=120)
    await client.register(name, password)
    await client.login(name, password)
    secure = SecureClient(client, DeviceStore(folder / f"{name}.json"))
    await secure.start()
    return secure
