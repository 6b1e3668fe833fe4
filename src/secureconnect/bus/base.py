"""The one interface every bus backend implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

Handler = Callable[[dict[str, Any]], None]
Unsubscribe = Callable[[], Awaitable[None]]


# Every membership change, for the services that act on one wherever they run (video-service
# takes a removed member out of the conversation's call).
MEMBERSHIP_TOPIC = "membership"


def user_topic(user_id: str) -> str:
    """The one topic a user's events go to: every device of theirs, on every replica, listens."""
    return f"user:{user_id}"


class Bus(Protocol):
    async def start(self) -> None: ...

    async def publish(self, topics: Sequence[str], event: dict[str, Any]) -> None:
        """Hands ``event`` to the subscribers of each of ``topics``.

        One call for all the topics an event goes to (a group message goes to every member's
        topic), so that a backend can carry it once rather than once per member. Every handler
        is given the same dict: it must not change it.
        """
        ...

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        """Calls ``handler`` for each event on ``topic`` until the returned callable is awaited.

        Handlers must not block: they run on the event loop, in publish order.
        """
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
