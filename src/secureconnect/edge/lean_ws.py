"""uvicorn's WebSocket protocol, holding less for each idle connection (issue 10, decision 0033).

A server holds thousands of device sockets that wait for hours between frames, so what each
one keeps while it waits is the server's memory. uvicorn's protocol keeps, for the socket's
whole life, an ``asyncio.Queue`` (four deques, about 3 KiB, for what is never more than a
frame or two: it stops reading until the app has taken the last one), an ``asyncio.Event``
(one deque more) and the parsed upgrade request and its response with their headers, which
nothing reads once the handshake is done; and a timer of the event loop for its next
keepalive ping (a handle, a libuv timer and a callback: about 0.6 KiB). Here the queue and the
event are a list and a future or two, the handshake's objects are let go once the answer to it
is sent, and the pings wait on one clock for all sockets (``PingClock``). Everything else
(framing, pings and their timeouts, closing, back-pressure) is uvicorn's and websockets' own.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

T = TypeVar("T")


class Mailbox(Generic[T]):
    """The part of ``asyncio.Queue`` the protocol uses: unbounded, first in first out.
    ``drained`` is called when a ``get`` leaves it empty (the protocol resumes reading then)."""

    __slots__ = ("_drained", "_getters", "_items")

    def __init__(self, drained: Callable[[], object] | None = None) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None  # made when first needed
        self._drained = drained

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        if self._getters:
            _wake_first(self._getters)

    async def get(self) -> T:
        # Waits in its own frame rather than through ``_parked``: an idle socket's reader
        # sits here for hours, and each coroutine on its stack is a few hundred bytes.
        while not self._items:
            getters = self._getters
            if getters is None:
                getters = self._getters = []
            waiter = asyncio.get_running_loop().create_future()
            getters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in getters:
                    getters.remove(waiter)
                if self._items and getters:
                    _wake_first(getters)  # woken but cancelled: pass the item on
                raise
        item = self._items.pop(0)  # reading pauses after each frame: this list stays short
        if self._items:
            if self._getters:
                _wake_first(self._getters)
        elif self._drained is not None:
            self._drained()
        return item


class Gate:
    """The part of ``asyncio.Event`` the protocol uses (``writable``): open, shut, wait."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] | None = None  # made when first needed

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> bool:
        if not self._open:
            if self._waiters is None:
                self._waiters = []
            await _parked(self._waiters)
        return True


async def _parked(waiters: list[asyncio.Future[None]]) -> None:
    """Waits until woken through ``waiters``; one that gives up takes itself off the list."""
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        if waiter in waiters:
            waiters.remove(waiter)


def _wake_first(getters: list[asyncio.Future[None]]) -> None:
    while getters:
        getter = getters.pop(0)
        if not getter.done():
            getter.set_result(None)
            return


class PingClock:
    """When each socket of one event loop sends its next keepalive ping: sockets in slots of
    ``TICK_S``, one timer for the lot. A ping goes out on the first tick at or after it is due,
    so up to ``TICK_S`` late, against an interval of seconds (20 by default)."""

    TICK_S = 0.25

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, set[LeanWebSocketProtocol]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, protocol: LeanWebSocketProtocol, delay: float) -> int:
        """Rings ``protocol`` in ``delay`` seconds; the slot returned is what ``remove`` takes."""
        slot = math.ceil((self._loop.time() + delay) / self.TICK_S)
        self._slots.setdefault(slot, set()).add(protocol)
        if self._timer is None:
            self._timer = self._loop.call_at(slot * self.TICK_S, self._tick)
        return slot

    def remove(self, protocol: LeanWebSocketProtocol, slot: int) -> None:
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.discard(protocol)
            if not waiting:
                del self._slots[slot]

    def _tick(self) -> None:
        self._timer = None
        # A loop's timers may fire a millisecond early (libuv counts whole milliseconds).
        now = (self._loop.time() + 0.002) / self.TICK_S
        for slot in sorted(s for s in self._slots if s <= now):
            for protocol in self._slots.pop(slot):
                protocol.send_keepalive_ping()
        if self._slots:
            self._timer = self._loop.call_at(min(self._slots) * self.TICK_S, self._tick)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PingClock] = (
    weakref.WeakKeyDictionary()
)


def ping_clock(loop: asyncio.AbstractEventLoop) -> PingClock:
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = PingClock(loop)
    return clock


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws="websockets-sansio"`` with the per-connection savings above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Mailbox(self._resume_reading)  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]
        self.ping_slot: int | None = None

    def receive(self) -> Awaitable[Any]:  # type: ignore[override]
        # uvicorn's receive is a coroutine around the queue's: a frame more on every idle
        # socket's stack. The mailbox resumes reading itself once it is empty.
        return self.queue.get()

    def _resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_slot = ping_clock(self.loop).add(self, delay)

    def send_keepalive_ping(self) -> None:
        self.ping_slot = None  # rung: the clock has let go of it
        super().send_keepalive_ping()

    def stop_keepalive(self) -> None:
        if self.ping_slot is not None:
            ping_clock(self.loop).remove(self, self.ping_slot)
            self.ping_slot = None
        super().stop_keepalive()

    def start_keepalive(self) -> None:
        # Called once, right after the 101 is written: the upgrade request and the response
        # built for it are not read again (a refused upgrade closes the socket anyway). Here
        # rather than in ``send``, which would add a frame to every message sent.
        # websockets' parser keeps the request in its generator's frame: empty its headers.
        self.request.headers.clear()
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()
