"""The scale-out bus: Redis pub/sub between replicas.

Every replica subscribes to one channel, and an event crosses Redis once, with the list of topics
it is for: a message to a group of 100 is one PUBLISH and one decode per replica, not 100 of each.
Each replica hands it to the subscribers it has of those topics and ignores the rest. (Per-topic
channels would spare a replica events for people it does not serve, at the cost of a PUBLISH per
member and a SUBSCRIBE per connecting user; with a handful of replicas one channel is cheaper.)

Two rules keep delivery correct when Redis misbehaves:
- events for this replica's own connections are handed to them directly, never round-tripped
  through Redis, so a replica keeps serving its own devices while Redis is down; its own echo is
  recognised by a prefix and dropped without decoding it;
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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from secureconnect.bus.base import Handler, Unsubscribe
from secureconnect.bus.memory import add_handler, dispatch

log = logging.getLogger("secureconnect.bus")
CHANNEL = "sc:events"


class RedisBus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.origin = secrets.token_hex(8).encode()  # this replica; its own echoes are ignored
        self._client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.connected = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def publish(self, topics: Sequence[str], event: dict[str, Any]) -> None:
        dispatch(self._handlers, topics, event)
        payload = self.origin + b"\n" + json.dumps([list(topics), event]).encode()
        try:
            await self._client.publish(CHANNEL, payload)
        except (RedisError, OSError) as error:
            # Other replicas miss it live; their devices get it from the store on resync.
            log.warning("bus publish failed", extra={"fields": {"error": type(error).__name__}})

    async def subscribe(self, topic: str, handler: Handler) -> Unsubscribe:
        return add_handler(self._handlers, topic, handler)

    def _received(self, data: bytes) -> None:
        origin, _, body = data.partition(b"\n")
        if origin == self.origin:
            return
        topics, event = json.loads(body)
        dispatch(self._handlers, topics, event)

    async def _listen(self) -> None:
        delay = 0.2
        first = True
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self.connected = True
                if not first:
                    log.info("bus reconnected")
                    for callback in list(self.on_reconnect):
                        await callback()
                first = False
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                if self.connected:
                    log.error(
                        "bus connection lost", extra={"fields": {"error": type(error).__name__}}
                    )
                self.connected = False
                first = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._task
        await self._client.aclose()
