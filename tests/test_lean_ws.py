"""The realtime socket's receive queue and write gate (edge/lean_ws.py), which replace
asyncio's Queue and Event under uvicorn's protocol: a frame must never be lost or reordered,
whatever a waiting reader's fate, and a writer held back by a full buffer must go on once it
drains. Every WebSocket test runs over them too; these pin down the edges those cannot reach."""

from __future__ import annotations

import asyncio

import pytest

from secureconnect.edge.lean_ws import Gate, Mailbox


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
