"""The one interface every bus backend implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Handler = Callable[[dict[str, Any]], None]
Unsubscribe = Callable[[], Awaitable[None]]


class Bus(Protocol):
    async def start(self) -> None: ...

    async def publish(self, topic: str, event: dict[str, Any]) -> None: ...

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        """Calls ``handler`` for each event on ``topic`` until the returned callable is awaited.

        Handlers must not block: they run on the event loop, in publish order.
        """
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
