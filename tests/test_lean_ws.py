"""The realtime socket's receive queue and write gate (edge/lean_ws.py), which replace
asyncio's Queue and Event under uvicorn's protocol: a frame must never be lost or reordered,
whatever a waiting reader's fate, and a writer held back by a full buffer must go on once it
drains. Every WebSocket test runs over them too; these pin down the edges those cannot reach."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from secureconnect.edge.lean_ws import Gate, Mailbox, PingClock
from tests.conftest import FAST
from tests.helpers import ws_url
from tests.server import ServerProcess


async def test_frames_come_out_in_the_order_they_arrived() -> None:
    box: Mailbox[str] = Mailbox()
    reader = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    for frame in ("a", "b", "c"):
        box.put_nowait(frame)
    assert await reader == "a"
    assert [await box.get(), await box.get()] == ["b", "c"]
    assert box.empty()


async def test_a_reader_cancelled_as_a_frame_arrives_leaves_it_for_the_next() -> None:
    box: Mailbox[str] = Mailbox()
    first = asyncio.ensure_future(box.get())
    second = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    box.put_nowait("frame")  # wakes the first reader...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "frame"


async def test_a_cancelled_reader_takes_nothing() -> None:
    box: Mailbox[str] = Mailbox()
    waiting = asyncio.ensure_future(box.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    box.put_nowait("later")
    assert await asyncio.wait_for(box.get(), 1) == "later"


async def test_writers_wait_while_the_gate_is_shut_and_all_go_when_it_opens() -> None:
    gate = Gate()
    assert await asyncio.wait_for(gate.wait(), 1)  # open from the start
    gate.clear()
    writers = [asyncio.ensure_future(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in writers)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*writers), 1) == [True, True, True]


async def test_a_writer_that_gives_up_does_not_hold_the_gate() -> None:
    gate = Gate()
    gate.clear()
    quitter = asyncio.ensure_future(gate.wait())
    stayer = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    quitter.cancel()
    gate.set()
    assert await asyncio.wait_for(stayer, 1)
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_keepalive_pings_keep_a_live_device_and_drop_a_silent_one(
    tmp_path, make_user
) -> None:
    """The pings wait on one clock for all sockets (PingClock), not on a timer each: a device
    that answers them stays, one that stopped reading is closed once a ping goes unanswered."""
    env = {
        **FAST,
        "SECURECONNECT_WS_PING_INTERVAL_S": "0.5",
        "SECURECONNECT_WS_PING_TIMEOUT_S": "0.5",
    }
    srv = ServerProcess(tmp_path, env).start()
    try:
        alice = await make_user(srv, "alice")
        auth = json.dumps({"type": "auth", "protocol": 2, "token": alice.token})
        async with (
            connect(ws_url(srv), ping_interval=None) as live,
            connect(ws_url(srv), ping_interval=None) as silent,
        ):
            for ws in (live, silent):
                await ws.send(auth)
                while json.loads(await ws.recv())["type"] != "ready":
                    pass
            silent.transport.pause_reading()  # it reads nothing more, pings included
            await asyncio.sleep(3.0)  # six intervals

            await live.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(live.recv(), 5))["type"] == "pong"

            silent.transport.resume_reading()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(silent.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011  # keepalive ping timeout
    finally:
        srv.stop()


async def test_the_ping_clock_rings_each_socket_once_when_due_and_never_a_stopped_one() -> None:
    rung: list[str] = []

    class Socket:
        def __init__(self, name: str) -> None:
            self.name = name

        def send_keepalive_ping(self) -> None:
            rung.append(self.name)

    clock = PingClock(asyncio.get_running_loop())
    soon, later, stopped = Socket("soon"), Socket("later"), Socket("stopped")
    clock.add(soon, 0.1)  # type: ignore[arg-type]
    clock.add(later, 0.6)  # type: ignore[arg-type]
    slot = clock.add(stopped, 0.1)  # type: ignore[arg-type]
    clock.remove(stopped, slot)  # type: ignore[arg-type]
    await asyncio.sleep(0.45)
    assert rung == ["soon"]
    await asyncio.sleep(0.6)
    assert rung == ["soon", "later"]
