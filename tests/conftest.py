from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from secureconnect.client import Client
from tests.server import ServerProcess

PASSWORD = "correct horse battery staple"
_counter = itertools.count()

# Settings that make the failure paths quick to reach in tests.
FAST = {
    "SECURECONNECT_WS_AUTH_TIMEOUT_S": "1",
    "SECURECONNECT_WS_SEND_QUEUE": "64",
    "SECURECONNECT_MAX_REQUEST_BYTES": "200000",
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the tests that do not stop it; each test uses fresh usernames."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"), FAST).start()
    yield proc
    proc.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server this test may stop, crash and restart."""
    proc = ServerProcess(tmp_path / "server", FAST)
    proc.data_dir.mkdir()
    yield proc
    proc.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}{secrets.token_hex(3)}"


UserFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_user() -> AsyncIterator[UserFactory]:
    """Registers and logs in a new user on a server; the client is closed after the test."""
    clients: list[Client] = []

    async def make(srv: ServerProcess, prefix: str = "user") -> Client:
        client = Client(srv.url)
        clients.append(client)
        name = unique(prefix)
        await client.register(name, PASSWORD)
        await client.login(name, PASSWORD, device_name="test")
        return client

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
