"""What the server acknowledged survives a crash; open clients reconnect and lose nothing."""

from __future__ import annotations

import asyncio

import pytest

from secureconnect.client import Client
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import SecureClient
from tests.helpers import PASSWORD, Listener, SecureListener, signed_up, started_devices, texts

pytestmark = pytest.mark.slow  # servers of its own, killed and restarted


async def login_pair(url: str) -> tuple[Client, Client]:
    return await signed_up(Client(url), "alice"), await signed_up(Client(url), "bob")


async def test_crash_between_send_and_sync_loses_nothing_acknowledged(own_server) -> None:
    own_server.start()
    alice, bob = await login_pair(own_server.url)
    try:
        conv = await alice.direct("bob")
        acked = [
            await alice.send(conv.id, f"durable {i}".encode(), content_type="text/plain")
            for i in range(30)
        ]
        own_server.kill()  # SIGKILL: no shutdown hook runs, no buffer is flushed
        own_server.start()
        synced = [m async for m in bob.all_messages(conv.id) if m.kind == "message"]
        assert [(m.seq, m.body) for m in synced] == [(m.seq, m.body) for m in acked]
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_open_clients_reconnect_across_a_restart_exactly_once(own_server) -> None:
    own_server.start()
    alice, bob = await login_pair(own_server.url)
    listener = await Listener(bob).start()
    try:
        conv = await alice.direct("bob")
        for i in range(5):
            await alice.send(conv.id, f"before {i}".encode(), content_type="text/plain")
        await listener.wait_messages(conv.id, 5)
        own_server.kill()
        own_server.start()  # same port, same data
        for i in range(5):
            await alice.send(conv.id, f"after {i}".encode(), content_type="text/plain")
        got = await listener.wait_messages(conv.id, 10, timeout=20)
        await asyncio.sleep(0.3)
        assert texts(listener.messages(conv.id)) == (
            [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]
        )
        assert [m.seq for m in got] == sorted({m.seq for m in got})
        assert listener.stream.connects >= 2
    finally:
        await listener.stop()
        await alice.aclose()
        await bob.aclose()


async def test_a_device_restarting_after_a_server_crash_shows_nothing_twice(
    own_server, tmp_path
) -> None:
    """The server resumes a device from the acks it had written; those of the last half second
    die with it, so a device that starts again is sent a few messages again. The device drops
    them by sequence number: a person sees each message once."""
    own_server.start()
    clients: list[Client] = []

    async def user(prefix: str) -> Client:
        clients.append(Client(own_server.url))
        return await signed_up(clients[-1], prefix)

    alice, bob = await started_devices(user, tmp_path, "alice", "bob")
    conv = await alice.client.direct(bob.username)
    rx = await SecureListener(bob).start()
    try:
        for i in range(20):
            await alice.send(conv.id, f"before {i}".encode())
        await rx.wait_texts(conv.id, 20)
    finally:
        await rx.stop()
    own_server.kill()  # the acks of the last half second are not written
    own_server.start()
    again = Client(own_server.url)
    clients.append(again)
    await again.login(bob.username, PASSWORD, device_id=bob.device_id)
    bob_again = SecureClient(again, DeviceStore(tmp_path / "bob.json"))
    await bob_again.start()
    # As a device resuming from a stale position does (its own cursor from before, or the
    # server's): everything after message 5 comes again.
    rx = await SecureListener(bob_again, cursors={conv.id: 5}).start()
    try:
        await alice.send(conv.id, b"after the crash")
        await rx.wait_texts(conv.id, 1)
        await asyncio.sleep(0.5)
        assert rx.texts(conv.id) == ["after the crash"]
        assert bob_again.duplicates_dropped >= 15  # sent again by the server, shown once
    finally:
        await rx.stop()
        for client in clients:
            await client.aclose()


async def test_graceful_stop_closes_sockets_so_clients_reconnect(own_server) -> None:
    own_server.start()
    alice, bob = await login_pair(own_server.url)
    listener = await Listener(bob).start()
    try:
        conv = await alice.direct("bob")
        own_server.restart()  # SIGTERM, then start again
        await alice.send(conv.id, b"after a clean restart", content_type="text/plain")
        got = await listener.wait_messages(conv.id, 1, timeout=20)
        assert texts(got) == ["after a clean restart"]
        closes = [e for e in own_server.logs() if e.get("msg") == "websocket closed"]
        assert closes and closes[0]["close_code"] in (1001, 1012)
    finally:
        await listener.stop()
        await alice.aclose()
        await bob.aclose()
