"""What tests share: users, the CLI as a person types it, and reading realtime events with
deadlines so that a missing event fails, not hangs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from secureconnect.client import Client, Event, EventStream, Message, Ready

PASSWORD = "correct horse battery staple"
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}{secrets.token_hex(3)}"


async def signed_up(client: Client, name: str, device_name: str = "test") -> Client:
    """Registers ``name`` and logs ``client`` in as a new device of it."""
    await client.register(name, PASSWORD)
    await client.login(name, PASSWORD, device_name=device_name)
    return client


def run_cli(
    server_url: str,
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str = "",
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``secureconnect <args>`` in a shell of its own: ``home`` holds its profiles, the password
    comes from the environment, and ``env`` (default: this process's) is the operator's shell.
    Its output is a pipe, as a script's would be: no ``COLUMNS`` from the terminal pytest runs
    in, so what a test reads is laid out as a script would get it."""
    shell = env if env is not None else os.environ
    result = subprocess.run(
        [sys.executable, "-m", "secureconnect", *args],
        env={
            **{k: v for k, v in shell.items() if k not in ("COLUMNS", "LINES")},
            "SECURECONNECT_SERVER": server_url,
            "SECURECONNECT_CLI_HOME": str(home),
            "SECURECONNECT_PASSWORD": PASSWORD,
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ws_url(server: Any) -> str:
    """The realtime endpoint of a test server."""
    return str(server.url).replace("http", "ws", 1) + "/v1/events"


class Listener:
    """Runs a device's event stream in the background and collects what arrives."""

    def __init__(self, client: Client, cursors: dict[str, int] | None = None) -> None:
        self.stream: EventStream = client.events(cursors)
        self.events: list[Event] = []
        self.arrived: list[float] = []  # perf_counter() when each event arrived
        self.ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def _run(self) -> None:
        async for event in self.stream:
            if isinstance(event, Ready):
                self.ready.set()
            async with self._changed:
                self.events.append(event)
                self.arrived.append(time.perf_counter())
                self._changed.notify_all()

    def messages(self, conversation_id: str | None = None, kind: str = "message") -> list[Message]:
        return [
            e
            for e in self.events
            if isinstance(e, Message)
            and e.kind == kind
            and (conversation_id is None or e.conversation_id == conversation_id)
        ]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(check(), timeout)

    async def wait_messages(
        self, conversation_id: str, count: int, timeout: float = 10.0
    ) -> list[Message]:
        await self.wait_for(lambda s: len(s.messages(conversation_id)) >= count, timeout)
        return self.messages(conversation_id)

    async def stop(self) -> None:
        await self.stream.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


@contextlib.asynccontextmanager
async def listening(
    client: Client, cursors: dict[str, int] | None = None
) -> AsyncIterator[Listener]:
    listener = await Listener(client, cursors).start()
    try:
        yield listener
    finally:
        await listener.stop()


def texts(messages: list[Message]) -> list[str]:
    return [m.body.decode() for m in messages]


def call(
    server: Any,
    method: str,
    path: str,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> httpx.Response:
    """One plain HTTP request, for the cases the SDK would refuse to send."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.request(method, server.url + path, headers=sent, timeout=10, **kw)


def error_of(response: httpx.Response) -> tuple[int, str]:
    """The status and error code, after checking the body has the one error shape."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


class SecureListener:
    """Like Listener, for a SecureClient: collects decrypted events in the background."""

    def __init__(self, secure: Any, cursors: dict[str, int] | None = None) -> None:
        self.secure = secure
        self.cursors = cursors
        self.events: list[Any] = []
        self.ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> SecureListener:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 10)
        return self

    async def _run(self) -> None:
        async for event in self.secure.events(self.cursors):
            if isinstance(event, Ready):
                self.ready.set()
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def texts(self, conversation_id: str) -> list[str]:
        from secureconnect.client.secure import PlainMessage

        return [
            e.text
            for e in self.events
            if isinstance(e, PlainMessage)
            and e.kind == "message"
            and e.conversation_id == conversation_id
        ]

    async def wait_texts(self, conversation_id: str, count: int, timeout: float = 15) -> list[str]:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.texts(conversation_id)) >= count)

        await asyncio.wait_for(check(), timeout)
        return self.texts(conversation_id)

    async def stop(self) -> None:
        if self.secure.stream is not None:
            await self.secure.stream.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


DEPLOY = Path(__file__).parents[1] / "deploy" / "k8s"
K8S_VERSION = "1.30.0"


def render(overlay: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` makes of an overlay of deploy/k8s."""
    import shutil

    if not shutil.which("kubectl"):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is required in CI (.ci/run installs it)")
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus exposition's samples whose line starts with ``name`` (a name, or
    a name with its labels)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def started_devices(make_client: Any, folder: Path, *prefixes: str) -> list[Any]:
    """For each prefix a new user on the server (``make_client``: the ``user`` fixture) with a
    started end-to-end device whose keys live in ``folder``."""
    from secureconnect.client.devicestore import DeviceStore
    from secureconnect.client.secure import SecureClient

    devices = []
    for prefix in prefixes:
        device = SecureClient(await make_client(prefix), DeviceStore(folder / f"{prefix}.json"))
        await device.start()
        devices.append(device)
    return devices


async def call_owner(env: dict[str, str], call_id: str) -> str:
    """host:port of the replica whose Janus hosts the call, as the store records it."""
    import asyncpg

    db = await asyncpg.connect(env["SECURECONNECT_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        return str(await db.fetchval("SELECT owner FROM calls WHERE id = $1", call_id))
    finally:
        await db.close()
