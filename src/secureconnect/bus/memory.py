"""The embedded bus: topics are a dict of handler lists in this process."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from secureconnect.bus.base import Handler, Unsubscribe

log = logging.getLogger("secureconnect.bus")


class InProcessBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(event)
            except Exception:  # one broken subscriber must not stop delivery to the others
                log.exception("bus handler failed", extra={"fields": {"topic": topic}})

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        self._handlers[topic].append(handler)

        async def unsubscribe() -> None:
            handlers = self._handlers.get(topic)
            if handlers and handler in handlers:
                handlers.remove(handler)
                if not handlers:
                    del self._handlers[topic]

        return unsubscribe

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()
