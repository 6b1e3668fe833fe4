"""The realtime half of the SDK: an async iterator of events that survives disconnects.

It keeps, per conversation, the last sequence number it handed to the caller. On reconnect it
sends those positions, so the server resumes exactly there; anything at or below them that
arrives again is dropped. The caller therefore sees each message once, in order, even across
server restarts and dropped networks.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from secureconnect.client.errors import ConnectionLost
from secureconnect.client.types import (
    Call,
    CallChanged,
    Event,
    InboxMessage,
    Message,
    PrekeysLow,
    Ready,
    Receipt,
    Typing,
)

# Close codes after which reconnecting cannot help.
FATAL = {4400: "bad frame", 4401: "unauthorized"}
PROTOCOL = 2  # the realtime protocol this SDK speaks (docs/api.md)


class EventStream:
    def __init__(
        self, base_url: str, token: str, cursors: dict[str, int], *, reconnect: bool = True
    ) -> None:
        scheme = "wss" if base_url.startswith("https") else "ws"
        self.url = scheme + base_url[base_url.index(":") :] + "/v1/events"
        self.token = token
        self.cursors = dict(cursors)
        self.reconnect = reconnect
        self.connects = 0
        self._ws: ClientConnection | None = None
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        delay = 0.1
        while not self._closed:
            try:
                async with connect(self.url, open_timeout=10, max_size=2**24) as ws:
                    self._ws = ws
                    self.connects += 1
                    await ws.send(
                        json.dumps(
                            {
                                "type": "auth",
                                "protocol": PROTOCOL,
                                "token": self.token,
                                "cursors": self.cursors,
                            }
                        )
                    )
                    async for raw in ws:
                        for event in self._parse(raw):
                            delay = 0.1
                            yield event
                            if isinstance(event, Message):
                                await ws.send(
                                    json.dumps(
                                        {
                                            "type": "ack",
                                            "seq": event.seq,
                                            "conversation_id": event.conversation_id,
                                        }
                                    )
                                )
                    code, reason = _close_of(ws)
            except websockets.ConnectionClosed as closed:
                code, reason = _close_of_exc(closed)
            except (OSError, TimeoutError, websockets.InvalidHandshake):
                code, reason = 1006, "unreachable"
            finally:
                self._ws = None
            if self._closed:
                return
            if code in FATAL or not self.reconnect:
                raise ConnectionLost(code, reason or FATAL.get(code, "closed"))
            await asyncio.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, 5.0)

    def _parse(self, raw: str | bytes) -> list[Event]:
        """The events of one frame: none (a duplicate, or a kind this SDK does not know), one,
        or several (a "receipts" frame carries one receipt per person)."""
        data: dict[str, Any] = json.loads(raw)
        kind = data.get("type")
        if kind == "message":
            conv, seq = data["conversation_id"], data["seq"]
            if seq <= self.cursors.get(conv, 0):
                return []
            self.cursors[conv] = seq
            return [Message.from_json(data)]
        if kind == "receipts":
            conv = data["conversation_id"]
            return [
                Receipt(conv, r["user_id"], r["username"], r["delivered_seq"], r["read_seq"])
                for r in data["receipts"]
            ]
        if kind == "typing":
            return [
                Typing(data["conversation_id"], data["user_id"], data["username"], data["typing"])
            ]
        if kind == "ready":
            return [Ready()]
        if kind == "inbox":
            return [InboxMessage.from_json(data)]
        if kind == "prekeys_low":
            return [PrekeysLow(data["remaining"])]
        if kind == "call":
            return [CallChanged(Call.model_validate(data["call"]))]
        return []

    async def ack_inbox(self, up_to: int) -> None:
        """Tells the server this device has processed its inbox up to ``up_to`` (it deletes them).

        Over the open socket when there is one; the caller falls back to HTTP otherwise."""
        if self._ws is None:
            raise ConnectionLost(1006, "not connected")
        await self._ws.send(json.dumps({"type": "inbox_ack", "up_to": up_to}))

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()


def _close_of(ws: ClientConnection) -> tuple[int, str]:
    if ws.close_code is None:
        return 1006, ""
    return ws.close_code, ws.close_reason or ""


def _close_of_exc(closed: websockets.ConnectionClosed) -> tuple[int, str]:
    if closed.rcvd is None:
        return 1006, ""
    return closed.rcvd.code, closed.rcvd.reason
