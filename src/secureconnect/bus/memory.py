"""The embedded bus: topics are a dict of handler lists in this process."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from secureconnect.bus.base import Handler, Unsubscribe

log = logging.getLogger("secureconnect.bus")


class InProcessBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def publish(self, topics: Sequence[str], event: dict[str, Any]) -> None:
        dispatch(self._handlers, topics, event)

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        return add_handler(self._handlers, topic, handler)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()


def dispatch(
    handlers: dict[str, list[Handler]], topics: Sequence[str], event: dict[str, Any]
) -> None:
    """Calls this process's handlers of each topic; one broken handler does not stop the rest."""
    for topic in topics:
        for handler in list(handlers.get(topic, ())):
            try:
                handler(event)
            except Exception:
                log.exception("bus handler failed", extra={"fields": {"topic": topic}})


def add_handler(handlers: dict[str, list[Handler]], topic: str, handler: Handler) -> Unsubscribe:
    """Registers ``handler`` for ``topic``; awaiting the result removes it (and the topic, once
    it has no handler left, so that idle users cost nothing)."""
    handlers.setdefault(topic, []).append(handler)

    async def unsubscribe() -> None:
        listed = handlers.get(topic)
        if listed and handler in listed:
            listed.remove(handler)
            if not listed:
                del handlers[topic]

    return unsubscribe
