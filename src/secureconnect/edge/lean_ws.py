"""uvicorn's WebSocket protocol, holding less for each idle connection (issue 10, decision 0033).

A server holds thousands of device sockets that wait for hours between frames, so what each
one keeps while it waits is the server's memory. uvicorn's protocol keeps, for the socket's
whole life, an ``asyncio.Queue`` (four deques, about 3 KiB, for what is never more than a
frame or two: it stops reading until the app has taken the last one), an ``asyncio.Event``
(one deque more) and the parsed upgrade request and its response with their headers, which
nothing reads once the handshake is done. Here the queue and the event are a list and a
future or two, and the handshake's objects are let go once the answer to it is sent.
Everything else (framing, pings, closing, back-pressure) is uvicorn's and websockets' own.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

T = TypeVar("T")


class Mailbox(Generic[T]):
    """The part of ``asyncio.Queue`` the protocol uses: unbounded, first in first out."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getters: list[asyncio.Future[None]] | None = None  # made when first needed

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        if self._getters:
            _wake_first(self._getters)

    async def get(self) -> T:
        while not self._items:
            if self._getters is None:
                self._getters = []
            try:
                await _parked(self._getters)
            except BaseException:
                if self._items and self._getters:
                    _wake_first(self._getters)  # woken but cancelled: pass the item on
                raise
        item = self._items.pop(0)  # reading pauses after each frame: this list stays short
        if self._items and self._getters:
            _wake_first(self._getters)
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


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """``ws="websockets-sansio"`` with the per-connection savings above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Mailbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]

    def start_keepalive(self) -> None:
        # Called once, right after the 101 is written: the upgrade request and the response
        # built for it are not read again (a refused upgrade closes the socket anyway). Here
        # rather than in ``send``, which would add a frame to every message sent.
        # websockets' parser keeps the request in its generator's frame: empty its headers.
        self.request.headers.clear()
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        super().start_keepalive()
