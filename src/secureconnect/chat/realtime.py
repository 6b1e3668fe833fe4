"""Realtime delivery: one WebSocket per device.

Protocol (JSON text frames; full description in docs/api.md):

    client -> server   {"type": "auth", "token": "...", "cursors": {"<conversation>": seq}}  first
                       {"type": "ack", "conversation_id": "...", "seq": n}
                       {"type": "typing", "conversation_id": "...", "typing": true}
                       {"type": "ping"}
    server -> client   {"type": "welcome", ...}, then everything missed, then {"type": "ready"};
                       then live "message", "receipt", "typing" events; "pong"; "error"

Each connection subscribes to its user's bus topic *before* replaying from the store, and tracks the
last sequence number it sent per conversation: a live event already replayed is dropped, and a live
event that skips ahead (a bus message was lost) makes it fill the gap from the store first. So a
device receives every event of a conversation in order, exactly once per connection.

A connection that cannot keep up (its queue is full) is closed with 4429 instead of buffering
without bound; the client reconnects and resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from secureconnect.accounts.service import AccountService, AuthContext
from secureconnect.bus import Bus, Unsubscribe
from secureconnect.chat.service import ChatService, user_topic
from secureconnect.edge.logging import client_ip
from secureconnect.errors import Problem
from secureconnect.keys.service import InboxService
from secureconnect.ops.metrics import Metrics
from secureconnect.store import StoreUnavailable

log = logging.getLogger("secureconnect.realtime")
access_log = logging.getLogger("secureconnect.access")

# Close codes (4000-4999 are the application's own; see docs/api.md).
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
BAD_FRAME = 4400
UNAUTHORIZED = 4401
AUTH_TIMEOUT = 4408
TOO_SLOW = 4429

REPLAY_PAGE = 200
ACK_FLUSH_S = 0.5


class BadFrame(Exception):
    pass


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    """Validates one client frame; anything malformed ends the connection with 4400."""
    if text is None:
        raise BadFrame("binary frames are not accepted; send JSON text")
    try:
        frame = json.loads(text)
    except ValueError as error:
        raise BadFrame("frame is not valid JSON") from error
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise BadFrame("frame must be a JSON object with a string 'type'")
    kind = frame["type"]
    if kind == "auth":
        if not isinstance(frame.get("token"), str):
            raise BadFrame("auth frame needs a string 'token'")
        cursors = frame.get("cursors", {})
        if not isinstance(cursors, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in cursors.items()
        ):
            raise BadFrame("'cursors' must map conversation ids to sequence numbers >= 0")
    elif kind == "ack":
        _conversation(frame)
        seq = frame.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise BadFrame("ack frame needs an integer 'seq' >= 0")
    elif kind == "inbox_ack":
        up_to = frame.get("up_to")
        if not isinstance(up_to, int) or isinstance(up_to, bool) or up_to < 0:
            raise BadFrame("inbox_ack frame needs an integer 'up_to' >= 0")
    elif kind == "typing":
        _conversation(frame)
        if not isinstance(frame.get("typing"), bool):
            raise BadFrame("typing frame needs a boolean 'typing'")
    elif kind != "ping":
        raise BadFrame(f"unknown frame type '{kind[:40]}'")
    return frame


def _conversation(frame: dict[str, Any]) -> None:
    conv = frame.get("conversation_id")
    if not isinstance(conv, str) or not 0 < len(conv) <= 64:
        raise BadFrame(f"{frame['type']} frame needs a string 'conversation_id'")


class Connection:
    def __init__(self, ctx: AuthContext, queue_size: int) -> None:
        self.ctx = ctx
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.closing: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.acks: dict[str, int] = {}

    def close_with(self, code: int, reason: str) -> None:
        if not self.closing.done():
            self.closing.set_result((code, reason))

    def offer(self, event: dict[str, Any]) -> None:
        if event.get("type") == "_revoked":
            if self.ctx.session_id in event.get("session_ids", ()):
                self.close_with(UNAUTHORIZED, "session revoked")
            return
        if "device_id" in event and event["device_id"] != self.ctx.device_id:
            return  # meant for another of this user's devices
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.close_with(TOO_SLOW, "too slow to keep up; reconnect and resume")


class Hub:
    """This process's open connections, by user, fed from the bus."""

    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        self.bus = bus
        self.metrics = metrics
        self._by_user: dict[str, set[Connection]] = defaultdict(set)
        self._unsubscribe: dict[str, Unsubscribe] = {}

    async def attach(self, conn: Connection) -> None:
        uid = conn.ctx.user_id
        first = not self._by_user[uid]
        self._by_user[uid].add(conn)
        if first:
            self._unsubscribe[uid] = await self.bus.subscribe(
                user_topic(uid), lambda event: self._dispatch(uid, event)
            )
        self._count()

    async def detach(self, conn: Connection) -> None:
        uid = conn.ctx.user_id
        self._by_user[uid].discard(conn)
        if not self._by_user[uid]:
            del self._by_user[uid]
            unsubscribe = self._unsubscribe.pop(uid, None)
            if unsubscribe is not None:
                await unsubscribe()
        self._count()

    def _dispatch(self, uid: str, event: dict[str, Any]) -> None:
        for conn in list(self._by_user.get(uid, ())):
            conn.offer(event)

    def _count(self) -> None:
        self.metrics.websockets.set(sum(len(c) for c in self._by_user.values()))
        self.metrics.active_users.set(len(self._by_user))

    async def announce_revoked(self, user_id: str, session_ids: list[str]) -> None:
        """Closes the live connections of revoked sessions, on whichever replica holds them."""
        if session_ids:
            await self.bus.publish(
                user_topic(user_id), {"type": "_revoked", "session_ids": session_ids}
            )

    async def resync_all(self) -> None:
        """After the bus was away: every connection re-reads the store from where it stands."""
        for conns in self._by_user.values():
            for conn in conns:
                conn.offer({"type": "_resync"})

    def close_all(self, code: int, reason: str) -> None:
        for conns in self._by_user.values():
            for conn in conns:
                conn.close_with(code, reason)


class SocketSession:
    """Runs one device's WebSocket from accept to close."""

    def __init__(
        self,
        ws: WebSocket,
        accounts: AccountService,
        chat: ChatService,
        inbox: InboxService,
        hub: Hub,
        *,
        auth_timeout: float,
        queue_size: int,
    ) -> None:
        self.ws = ws
        self.accounts = accounts
        self.chat = chat
        self.inbox = inbox
        self.hub = hub
        self.inbox_sent = 0
        self.auth_timeout = auth_timeout
        self.queue_size = queue_size
        self.sent: dict[str, int] = {}

    async def run(self) -> None:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        await self.ws.accept()
        code, reason, username = await self._authenticated_session()
        await self._close(code, reason)
        self.hub.metrics.ws_closed.labels(_reason_label(code)).inc()
        access_log.info(
            "websocket closed",
            extra={
                "fields": {
                    "status": 101,
                    "uri": self.ws.url.path,
                    "method": "GET",
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user": username,
                    "ip": client_ip(self.ws.scope),
                    "request_id": request_id,
                    "close_code": code,
                    "close_reason": reason,
                }
            },
        )

    async def _authenticated_session(self) -> tuple[int, str, str]:
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.auth_timeout)
        except TimeoutError:
            return AUTH_TIMEOUT, "no auth frame in time", "-"
        if message["type"] == "websocket.disconnect":
            return 1000, "client left", "-"
        try:
            frame = parse_frame(message.get("text"), message.get("bytes"))
            if frame["type"] != "auth":
                raise BadFrame("the first frame must be {'type': 'auth', 'token': ...}")
        except BadFrame as error:
            return BAD_FRAME, str(error), "-"
        try:
            ctx = await self.accounts.authenticate(frame["token"])
        except Problem as error:
            return UNAUTHORIZED, error.code, "-"
        except StoreUnavailable as error:
            return TRY_AGAIN_LATER, error.code, "-"
        conn = Connection(ctx, self.queue_size)
        await self.hub.attach(conn)
        try:
            code, reason = await self._serve(conn, frame.get("cursors", {}))
        finally:
            await self.hub.detach(conn)
            await self._flush_acks(conn)
        return code, reason, ctx.username

    async def _serve(self, conn: Connection, cursors: dict[str, int]) -> tuple[int, str]:
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._writer(conn, cursors)),
            asyncio.ensure_future(self._reader(conn)),
            asyncio.ensure_future(self._ack_flusher(conn)),
        ]
        try:
            waiters: list[asyncio.Future[Any]] = [conn.closing, *tasks]
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if conn.closing.done():
            return conn.closing.result()
        for task in done:
            error = task.exception()
            if isinstance(error, StoreUnavailable):
                return TRY_AGAIN_LATER, error.code
            if isinstance(error, WebSocketDisconnect):
                return error.code, "client left"
            if error is not None:
                log.error("websocket failed", exc_info=error)
                return 1011, "internal error"
        return 1000, "closed"

    async def _writer(self, conn: Connection, cursors: dict[str, int]) -> None:
        ctx = conn.ctx
        await self._send(
            {
                "type": "welcome",
                "user_id": ctx.user_id,
                "username": ctx.username,
                "device_id": ctx.device_id,
            }
        )
        await self._replay(ctx, cursors)
        await self._send({"type": "ready"})
        while True:
            event = await conn.queue.get()
            if event["type"] == "_resync":
                await self._replay(ctx, self.sent)
                continue
            if event["type"] == "message":
                conv_id, seq = event["conversation_id"], event["seq"]
                last = self.sent.get(conv_id, 0)
                if seq <= last:
                    continue
                if seq > last + 1:
                    await self._catch_up(ctx, conv_id)
                    continue
                self.sent[conv_id] = seq
            elif event["type"] == "inbox":
                if event["id"] <= self.inbox_sent:
                    continue
                self.inbox_sent = event["id"]
            await self._send(event)

    async def _replay(self, ctx: AuthContext, cursors: dict[str, int]) -> None:
        """Everything after the given positions, from the store: the inbox first (it carries
        the keys that conversation messages need), then each conversation in order."""
        while True:
            pending = await self.inbox.pending(ctx, self.inbox_sent, REPLAY_PAGE)
            for item in pending:
                self.inbox_sent = item["id"]
                await self._send(item)
            if len(pending) < REPLAY_PAGE:
                break
        positions = await self.chat.start_positions(ctx.user_id, ctx.device_id, dict(cursors))
        for conv_id, start in positions.items():
            self.sent[conv_id] = max(start, self.sent.get(conv_id, 0))
            await self._catch_up(ctx, conv_id)

    async def _catch_up(self, ctx: AuthContext, conv_id: str) -> None:
        while True:
            page = await self.chat.events_after(
                ctx.user_id, conv_id, self.sent.get(conv_id, 0), REPLAY_PAGE
            )
            for event in page:
                self.sent[conv_id] = event["seq"]
                await self._send(event)
            if len(page) < REPLAY_PAGE:
                return

    async def _reader(self, conn: Connection) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            try:
                frame = parse_frame(message.get("text"), message.get("bytes"))
            except BadFrame as error:
                conn.close_with(BAD_FRAME, str(error))
                return
            kind = frame["type"]
            if kind == "ping":
                await self._send({"type": "pong"})
            elif kind == "ack":
                conv_id = frame["conversation_id"]
                conn.acks[conv_id] = max(conn.acks.get(conv_id, 0), frame["seq"])
            elif kind == "inbox_ack":
                await self.inbox.ack(conn.ctx, frame["up_to"])
            elif kind == "typing":
                try:
                    await self.chat.typing(conn.ctx, frame["conversation_id"], frame["typing"])
                except Problem as error:
                    await self._send(
                        {
                            "type": "error",
                            "code": error.code,
                            "message": error.message,
                            "frame": "typing",
                        }
                    )
            else:
                conn.close_with(BAD_FRAME, "already authenticated")
                return

    async def _ack_flusher(self, conn: Connection) -> None:
        """Acks are batched: a device acking every message must not cost a write per message."""
        while True:
            await asyncio.sleep(ACK_FLUSH_S)
            await self._flush_acks(conn)

    async def _flush_acks(self, conn: Connection) -> None:
        if not conn.acks:
            return
        pending, conn.acks = conn.acks, {}
        try:
            await self.chat.ack(conn.ctx, pending)
        except StoreUnavailable:
            for conv_id, seq in pending.items():  # keep them for the next try
                conn.acks[conv_id] = max(conn.acks.get(conv_id, 0), seq)

    async def _send(self, event: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(event, separators=(",", ":")))

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        with contextlib.suppress(Exception):  # the peer may already be gone
            await self.ws.close(code, reason[:120])


def _reason_label(code: int) -> str:
    return {
        1000: "normal",
        GOING_AWAY: "going_away",
        BAD_FRAME: "bad_frame",
        UNAUTHORIZED: "unauthorized",
        AUTH_TIMEOUT: "auth_timeout",
        TOO_SLOW: "too_slow",
        TRY_AGAIN_LATER: "store_unavailable",
    }.get(code, "other")
