"""The scale-out bus: Redis pub/sub between replicas.

Two rules keep delivery correct when Redis misbehaves:
- events for this replica's own connections are handed to them directly, never round-tripped
  through Redis, so a replica keeps serving its own devices while Redis is down;
- after the subscription reconnects, ``on_reconnect`` callbacks run, and the hub has every open
  connection re-read the store from where it is: whatever was published while this replica was
  not listening still arrives, in order, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from secureconnect.bus.base import Handler, Unsubscribe

log = logging.getLogger("secureconnect.bus")
PREFIX = "sc:"


class RedisBus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.origin = secrets.token_hex(8)  # this replica; its own echoes are ignored
        self._client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.connected = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        self._dispatch(topic, event)
        try:
            await self._client.publish(PREFIX + topic, json.dumps([self.origin, event]))
        except (RedisError, OSError) as error:
            # Other replicas miss it live; their devices get it from the store on resync.
            log.warning("bus publish failed", extra={"fields": {"error": type(error).__name__}})

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        self._handlers[topic].append(handler)
        if len(self._handlers[topic]) == 1 and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(PREFIX + topic)
            except (RedisError, OSError):
                self._wake.set()  # the listener will resubscribe everything

        async def unsubscribe() -> None:
            handlers = self._handlers.get(topic)
            if handlers and handler in handlers:
                handlers.remove(handler)
            if handlers is not None and not handlers:
                del self._handlers[topic]
                if self._pubsub is not None:
                    with contextlib.suppress(RedisError, OSError):
                        await self._pubsub.unsubscribe(PREFIX + topic)

        return unsubscribe

    def _dispatch(self, topic: str, event: dict[str, Any]) -> None:
        for handler in list(self._handlers.get(topic, ())):
            try:
                handler(event)
            except Exception:  # one broken subscriber must not stop the others
                log.exception("bus handler failed", extra={"fields": {"topic": topic}})

    async def _listen(self) -> None:
        delay = 0.2
        first = True
        while True:
            pubsub = self._client.pubsub()
            try:
                # A channel no one uses keeps the connection subscribed (and pingable).
                await pubsub.subscribe(
                    PREFIX + "_replica:" + self.origin, *[PREFIX + t for t in self._handlers]
                )
                self._pubsub = pubsub
                self.connected = True
                if not first:
                    log.info("bus reconnected")
                    for callback in list(self.on_reconnect):
                        await callback()
                first = False
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    origin, event = json.loads(message["data"])
                    if origin != self.origin:
                        self._dispatch(message["channel"].decode()[len(PREFIX) :], event)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                if self.connected:
                    log.error(
                        "bus connection lost", extra={"fields": {"error": type(error).__name__}}
                    )
                self.connected = False
                self._pubsub = None
                first = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._task
        await self._client.aclose()
