"""Several replicas on one PostgreSQL and one Redis: what a device sends on one replica reaches
devices on the others, and neither Redis going away nor a replica dying loses anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from secureconnect.client import Client
from tests.helpers import PASSWORD, Listener, texts
from tests.server import ServerProcess

pytestmark = pytest.mark.slow  # two replicas and a Redis of their own


@pytest.fixture
def replicas(replicas_on_redis) -> list[ServerProcess]:
    return replicas_on_redis()


@pytest.fixture
async def pair(replicas: list[ServerProcess]) -> AsyncIterator[tuple[Client, Client, str]]:
    alice, bob = Client(replicas[0].url), Client(replicas[1].url)
    for client, name in ((alice, "alice"), (bob, "bob")):
        await client.register(name, PASSWORD)
        await client.login(name, PASSWORD)
    conv = await alice.direct("bob")
    yield alice, bob, conv.id
    await alice.aclose()
    await bob.aclose()


async def test_devices_on_different_replicas_talk_live(pair) -> None:
    alice, bob, conv = pair
    a_rx, b_rx = await Listener(alice).start(), await Listener(bob).start()
    try:
        await alice.send(conv, b"from replica a", content_type="text/plain")
        assert texts(await b_rx.wait_messages(conv, 1)) == ["from replica a"]
        await bob.send(conv, b"from replica b", content_type="text/plain")
        assert texts(await a_rx.wait_messages(conv, 2)) == ["from replica a", "from replica b"]
    finally:
        await a_rx.stop()
        await b_rx.stop()


async def test_redis_restart_mid_stream_loses_nothing(pair, redis_server, replicas) -> None:
    alice, bob, conv = pair
    b_rx = await Listener(bob).start()
    try:
        for i in range(5):
            await alice.send(conv, f"before {i}".encode(), content_type="text/plain")
        await b_rx.wait_messages(conv, 5)
        redis_server.stop()
        # Redis is gone: replica a still accepts and stores; replica b cannot hear of it live.
        for i in range(5):
            await alice.send(conv, f"during {i}".encode(), content_type="text/plain")
        ready = await asyncio.to_thread(httpx.get, replicas[0].url + "/readyz")
        assert ready.status_code == 503  # the runbook's readiness check sees the bus is down
        redis_server.start()  # same port: both replicas reconnect and resync from the store
        # Nothing new is sent: the missed messages must come from the resync alone.
        during = await b_rx.wait_messages(conv, 10, timeout=30)
        assert texts(during)[5:] == [f"during {i}" for i in range(5)]
        for i in range(5):
            await alice.send(conv, f"after {i}".encode(), content_type="text/plain")
        got = await b_rx.wait_messages(conv, 15, timeout=30)
        expected = (
            [f"before {i}" for i in range(5)]
            + [f"during {i}" for i in range(5)]
            + [f"after {i}" for i in range(5)]
        )
        assert texts(got) == expected  # every one, in order, once
        await asyncio.sleep(0.5)
        assert len(b_rx.messages(conv)) == 15
    finally:
        await b_rx.stop()


async def test_a_replica_killed_mid_stream_its_devices_resume_on_the_other(pair, replicas) -> None:
    alice, bob, conv = pair
    b_rx = await Listener(bob).start()
    acked = []
    try:
        for i in range(10):
            acked.append(await alice.send(conv, f"m{i}".encode(), content_type="text/plain"))
        await b_rx.wait_messages(conv, 3)
        cursors = dict(b_rx.stream.cursors)
        replicas[1].kill()  # bob's replica dies (SIGKILL)
    finally:
        await b_rx.stop()
    for i in range(10, 15):
        acked.append(await alice.send(conv, f"m{i}".encode(), content_type="text/plain"))
    # The ingress now sends bob's device to the surviving replica; it resumes from its cursors.
    async with Client(replicas[0].url, bob.token) as moved:
        rx = await Listener(moved, cursors).start()
        try:
            before = b_rx.messages(conv)
            after = await rx.wait_messages(conv, len(acked) - len(before), timeout=20)
            seen = [m.seq for m in before] + [m.seq for m in after]
            assert seen == [m.seq for m in acked]  # exactly once, in order, nothing lost
        finally:
            await rx.stop()
