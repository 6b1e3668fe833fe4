"""Realtime delivery: one WebSocket per device.

Protocol (JSON text frames; full description in docs/api.md):

    client -> server   {"type": "auth", "protocol": 2, "token": "...", "cursors": {"<conv>": seq}}
                       {"type": "send", "conversation_id": "...", "client_msg_id": "...",
                        "content_type": "...", "body": "<base64>"}
                       {"type": "ack", "conversation_id": "...", "seq": n}
                       {"type": "typing", "conversation_id": "...", "typing": true}
                       {"type": "ping"}
    server -> client   {"type": "welcome", ...}, then everything missed, then {"type": "ready"};
                       then live "message", "receipts", "typing" events; "pong"; "error";
                       {"type": "sent", ...} once a sent message is stored durably

Each connection subscribes to its user's bus topic *before* replaying from the store, and tracks the
last sequence number it sent per conversation: a live event already replayed is dropped, and a live
event that skips ahead (a bus message was lost) makes it fill the gap from the store first. So a
device receives every event of a conversation in order, exactly once per connection.

A connection that cannot keep up is closed with 4429 instead of buffering without bound: when
its queue holds ``ws_send_queue`` events, or when what waits to reach it passes
``ws_send_buffer_bytes``, by the server's own count: the queue's bytes, the socket's write
buffer and the kernel's unsent send queue (``TIOCOUTQ``). So a device that stops reading is cut
off while the server still has little of its data, not only once every buffer is full. Its log
line and metric are written when that is decided; the close frame then has a few seconds to get
through before the connection is dropped. The client reconnects and resumes from its cursor.

Acks from every connection of the process are written together (:class:`AckBuffer`): one
transaction per half second, whatever the number of devices acking.

A ``send`` frame is ``POST /v1/conversations/{id}/messages`` without an HTTP request around it:
the same rules, idempotency and durability (``sent`` comes after the commit, as the 201 does),
the same per-user rate limit, and no middleware stack, token lookup or connection per message
(decision 0023). A connection's sends are stored in the order it sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import struct
import termios
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from secureconnect.accounts.service import AccountService, AuthContext
from secureconnect.bus import Bus, Unsubscribe, user_topic
from secureconnect.chat.schemas import SendMessage
from secureconnect.chat.service import Ack, ChatService
from secureconnect.edge.logging import client_ip
from secureconnect.errors import Problem, TooManyRequests
from secureconnect.guard.limits import RateLimits
from secureconnect.heap import release_memory
from secureconnect.keys.service import InboxService
from secureconnect.ops.metrics import Metrics
from secureconnect.schemas import INT64_MAX
from secureconnect.store import StoreUnavailable

log = logging.getLogger("secureconnect.realtime")
access_log = logging.getLogger("secureconnect.access")

# Close codes (4000-4999 are the application's own; see docs/api.md).
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013
BAD_FRAME = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
AUTH_TIMEOUT = 4408
TOO_SLOW = 4429
CLOSE_WAIT_S = 10.0  # for a close frame to get through before the connection is dropped

REPLAY_PAGE = 200
INBOX_REMEMBERED = 4096
ACK_FLUSH_S = 0.5
# 2: receipts arrive as "receipts" frames, sent to the people whose messages they cover.
PROTOCOL = 2
# A crowd this large that halves hands its memory back (see Hub._count).
TRIM_AFTER = 200
TRIM_DELAY_S = 1.0
# Frames other than acks and sends (pings, typing, inbox acks), per connection: a bucket of
# FRAME_BURST refilled at FRAME_RATE a second; a frame beyond it is dropped and answered, once a
# second, with a rate_limited error. Acks are not counted: a busy group sends one per message,
# and the AckBuffer writes them together anyway. Sends count against the user's request limit,
# as the HTTP send does.
FRAME_RATE = 20.0
FRAME_BURST = 100.0


class BadFrame(Exception):
    pass


class Refused(Exception):
    """The socket ends before it is served: with this close code and reason."""

    def __init__(self, code: int, reason: str, username: str = "-") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.username = username


def parse_frame(text: str | None, data: bytes | None) -> dict[str, Any]:
    """Validates one client frame; anything malformed ends the connection with 4400."""
    if text is None:
        raise BadFrame("binary frames are not accepted; send JSON text")
    try:
        frame = json.loads(text)
    except ValueError as error:
        raise BadFrame("frame is not valid JSON") from error
    except RecursionError as error:  # "[[[[...": nested past what the parser will follow
        raise BadFrame("frame is nested too deeply") from error
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise BadFrame("frame must be a JSON object with a string 'type'")
    kind = frame["type"]
    if kind == "auth":
        if frame.get("protocol") != PROTOCOL:
            raise BadFrame(
                f"this server speaks protocol {PROTOCOL}: send 'protocol': {PROTOCOL} in the auth "
                "frame (update the client)"
            )
        if not isinstance(frame.get("token"), str):
            raise BadFrame("auth frame needs a string 'token'")
        cursors = frame.get("cursors", {})
        if not isinstance(cursors, dict) or not all(
            isinstance(k, str) and _position(v) for k, v in cursors.items()
        ):
            raise BadFrame("'cursors' must map conversation ids to sequence numbers >= 0")
    elif kind == "ack":
        _conversation(frame)
        if not _position(frame.get("seq")):
            raise BadFrame(f"ack frame needs an integer 'seq' from 0 to {INT64_MAX}")
    elif kind == "inbox_ack":
        if not _position(frame.get("up_to")):
            raise BadFrame(f"inbox_ack frame needs an integer 'up_to' from 0 to {INT64_MAX}")
    elif kind == "typing":
        _conversation(frame)
        if not isinstance(frame.get("typing"), bool):
            raise BadFrame("typing frame needs a boolean 'typing'")
    elif kind == "send":
        _conversation(frame)  # the rest is checked as the HTTP body is, answered per message
    elif kind != "ping":
        raise BadFrame(f"unknown frame type '{kind[:40]}'")
    return frame


def _position(value: Any) -> bool:
    """A sequence number or inbox id as the store keeps them: 0 to 2**63 - 1."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX


def _conversation(frame: dict[str, Any]) -> None:
    conv = frame.get("conversation_id")
    if not isinstance(conv, str) or not 0 < len(conv) <= 64:
        raise BadFrame(f"{frame['type']} frame needs a string 'conversation_id'")


class Connection:
    """One device's live connection: what waits to be sent to it, and why it should close.

    What waits is a plain list with one waiter, and the writer takes all of it at once: not an
    ``asyncio.Queue`` (three deques and their bookkeeping) nor even one deque (about 700 bytes
    empty), since a server holds thousands of idle connections, each paying for it.
    """

    __slots__ = ("_wake", "closing", "ctx", "limit", "limit_bytes", "pending", "queued", "unsent")

    def __init__(
        self,
        ctx: AuthContext,
        queue_size: int,
        limit_bytes: int = 2**62,
        unsent: Callable[[], int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.limit = queue_size
        self.limit_bytes = limit_bytes
        self.unsent = unsent  # bytes handed to the socket that have not left this machine
        self.queued = 0  # bytes of the frames in ``pending``
        self.pending: list[tuple[dict[str, Any], str]] = []
        self._wake: asyncio.Future[None] | None = None
        self.closing: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def take(self) -> list[tuple[dict[str, Any], str]]:
        """Everything queued so far, in order, waiting for something if nothing is."""
        while not self.pending:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        taken, self.pending, self.queued = self.pending, [], 0
        return taken

    def close_with(self, code: int, reason: str) -> None:
        if not self.closing.done():
            self.closing.set_result((code, reason))

    def offer(self, event: dict[str, Any], frame: str) -> None:
        """Queues an event with its encoded frame (encoded once for every connection). At most
        ``limit`` wait beside the batch the writer is sending."""
        if event.get("type") == "_revoked":
            if self.ctx.session_id in event.get("session_ids", ()):
                self.close_with(UNAUTHORIZED, "session revoked")
            return
        if "device_id" in event and event["device_id"] != self.ctx.device_id:
            return  # meant for another of this user's devices
        waiting = self.queued + len(frame) + (self.unsent() if self.unsent is not None else 0)
        if len(self.pending) >= self.limit or waiting > self.limit_bytes:
            self.close_with(TOO_SLOW, "too slow to keep up; reconnect and resume")
            return
        self.queued += len(frame)
        self.pending.append((event, frame))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)


class AckBuffer:
    """Device acks of this whole process, written in one transaction every ``interval``.

    A room of 100 whose devices each ack every message would otherwise cost 100 transactions
    (and 100 waits for SQLite's one writer) per flush interval; batched, it costs one. An ack
    is kept until a write succeeds, so a store outage delays it and loses nothing.
    """

    def __init__(self, chat: ChatService, interval: float = ACK_FLUSH_S) -> None:
        self.chat = chat
        self.interval = interval
        self._pending: dict[tuple[str, str], tuple[int, AuthContext]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def add(self, ctx: AuthContext, conv_id: str, seq: int) -> None:
        """Called for every ack frame, so it only remembers: the batch is built at flush."""
        key = (ctx.device_id, conv_id)
        known = self._pending.get(key)
        if known is None or seq > known[0]:
            self._pending[key] = (seq, ctx)
        if self._task is None:
            self._task = asyncio.create_task(self._flush_while_pending())

    def holds(self, device_id: str) -> bool:
        return any(device == device_id for device, _ in self._pending)

    async def flush(self) -> None:
        """Writes everything pending; acks added meanwhile wait for the next flush."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self.chat.ack(
                    [
                        Ack(ctx.user_id, ctx.username, device, conv_id, seq)
                        for (device, conv_id), (seq, ctx) in batch.items()
                    ]
                )
            except BaseException:
                for key, pending in batch.items():  # keep them for the next try
                    newer = self._pending.get(key)
                    if newer is None or newer[0] < pending[0]:
                        self._pending[key] = pending
                raise

    async def _flush_while_pending(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(self.interval)
                try:
                    await self.flush()
                except StoreUnavailable:
                    pass  # kept; the next round tries again
                except Exception:
                    log.exception("ack flush failed")
        finally:
            self._task = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.flush()


class Hub:
    """This process's open connections, by user, fed from the bus."""

    def __init__(self, bus: Bus, metrics: Metrics, chat: ChatService) -> None:
        self.bus = bus
        self.metrics = metrics
        self.acks = AckBuffer(chat)
        # A list, not a set, per user: most have a device or two, and a set is 200 bytes.
        self._by_user: dict[str, list[Connection]] = defaultdict(list)
        self._unsubscribe: dict[str, Unsubscribe] = {}
        self._encoded: tuple[dict[str, Any], str] | None = None
        self._open = 0
        self._peak = 0  # most connections since memory was last handed back
        self._trim: asyncio.Task[None] | None = None
        self._db = chat.db

    async def attach(self, conn: Connection) -> None:
        uid = conn.ctx.user_id
        first = not self._by_user[uid]
        self._by_user[uid].append(conn)
        self._open += 1
        if first:
            self._unsubscribe[uid] = await self.bus.subscribe(
                user_topic(uid), functools.partial(self._dispatch, uid)
            )
        self._count()

    async def detach(self, conn: Connection) -> None:
        uid = conn.ctx.user_id
        if conn in self._by_user[uid]:
            self._by_user[uid].remove(conn)
            self._open -= 1
        if not self._by_user[uid]:
            del self._by_user[uid]
            unsubscribe = self._unsubscribe.pop(uid, None)
            if unsubscribe is not None:
                await unsubscribe()
        self._count()

    def _count(self) -> None:
        open_now = self._open  # kept, not summed: a crowd connecting would cost n squared
        self.metrics.websockets.set(open_now)
        self.metrics.active_users.set(len(self._by_user))
        self._peak = max(self._peak, open_now)
        if self._peak >= TRIM_AFTER and open_now <= self._peak // 2 and self._trim is None:
            # Half of a crowd has gone: give its memory back to the system (a few ms, rarely),
            # once the rest of those leaving have had a moment to go too.
            self._trim = asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        try:
            await asyncio.sleep(TRIM_DELAY_S)
            self._peak = self._open
            await self._db.close_idle()
            release_memory()
        finally:
            self._trim = None

    def _dispatch(self, uid: str, event: dict[str, Any]) -> None:
        conns = self._by_user.get(uid)
        if conns:
            frame = self._frame(event)
            for conn in list(conns):
                conn.offer(event, frame)

    def _frame(self, event: dict[str, Any]) -> str:
        """The event's text frame. The bus hands the same dict for every member an event goes
        to, one after another, so remembering the last one encodes a group message once."""
        if self._encoded is not None and self._encoded[0] is event:
            return self._encoded[1]
        frame = "" if event["type"].startswith("_") else encode(event)
        self._encoded = (event, frame)
        return frame

    async def resync_all(self) -> None:
        """After the bus was away: every connection re-reads the store from where it stands."""
        for conns in self._by_user.values():
            for conn in conns:
                conn.offer({"type": "_resync"}, "")

    def close_all(self, code: int, reason: str) -> None:
        for conns in self._by_user.values():
            for conn in conns:
                conn.close_with(code, reason)


class SocketSession:
    """Runs one device's WebSocket from accept to close."""

    __slots__ = (
        "accounts",
        "allowance",
        "allowance_at",
        "auth_timeout",
        "chat",
        "hub",
        "inbox",
        "inbox_delivered",
        "inbox_sent",
        "inbox_unacked",
        "limits",
        "queue_size",
        "send_buffer_bytes",
        "sent",
        "transport",
        "warned_at",
        "ws",
    )

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
        send_buffer_bytes: int = 2**62,
        limits: RateLimits | None = None,
    ) -> None:
        self.ws = ws
        self.send_buffer_bytes = send_buffer_bytes
        self.transport = _transport_of(ws)
        self.limits = limits
        self.accounts = accounts
        self.chat = chat
        self.inbox = inbox
        self.hub = hub
        self.inbox_sent = 0  # the replay's position
        # Inbox ids are one sequence for every device, and two senders' messages can reach the
        # bus in the other order than their ids: delivery is deduplicated by id, not by a
        # high-water mark, and an ack deletes only what this connection delivered.
        self.inbox_delivered: dict[int, None] = {}  # ordered, bounded
        self.inbox_unacked: dict[int, None] = {}  # a set, but an empty dict is 150 B smaller
        self.auth_timeout = auth_timeout
        self.queue_size = queue_size
        self.sent: dict[str, int] = {}
        self.allowance = FRAME_BURST
        self.allowance_at = time.monotonic()
        self.warned_at = 0.0

    async def run(self) -> None:
        started = time.perf_counter()
        await self.ws.accept()
        code, reason, username = await self._authenticated_session()
        # Counted and logged when decided: closing a device that stopped reading may take a
        # while (its close frame waits behind what it did not read).
        self.hub.metrics.ws_closed.labels(_reason_label(code)).inc()
        access_log.info(
            "websocket closed",
            extra={
                "fields": {
                    "status": 101,
                    "uri": self.ws.scope["path"],
                    "method": "GET",
                    "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user": username,
                    "ip": client_ip(self.ws.scope),
                    "request_id": uuid.uuid4().hex,
                    "close_code": code,
                    "close_reason": reason,
                }
            },
        )
        await self._close(code, reason)

    def _unsent(self) -> int:
        """Bytes handed to this socket that have not left the machine: the transport's write
        buffer and the kernel's send queue (what the peer has not acknowledged)."""
        transport = self.transport
        if transport is None:
            return 0
        waiting = int(transport.get_write_buffer_size())
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                waiting += struct.unpack("i", raw)[0]
        return waiting

    async def _authenticated_session(self) -> tuple[int, str, str]:
        try:
            ctx, cursors = await self._sign_in()
        except Refused as refused:
            return refused.code, refused.reason, refused.username
        conn = Connection(ctx, self.queue_size, self.send_buffer_bytes, self._unsent)
        await self.hub.attach(conn)
        try:
            code, reason = await self._serve(conn, cursors)
        finally:
            await self.hub.detach(conn)
            if self.hub.acks.holds(ctx.device_id):
                # What it acked is written before the close frame: a device that reconnects
                # without cursors of its own resumes after it.
                with contextlib.suppress(StoreUnavailable):
                    await self.hub.acks.flush()
        return code, reason, ctx.username

    async def _sign_in(self) -> tuple[AuthContext, dict[str, int]]:
        """The device's identity and cursors from its first frame. A function of its own so
        that the frame, token included, is not kept for the socket's life."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.auth_timeout)
        except TimeoutError:
            raise Refused(AUTH_TIMEOUT, "no auth frame in time") from None
        if message["type"] == "websocket.disconnect":
            raise Refused(1000, "client left")
        try:
            frame = parse_frame(message.get("text"), message.get("bytes"))
            if frame["type"] != "auth":
                raise BadFrame("the first frame must be {'type': 'auth', 'token': ...}")
        except BadFrame as error:
            raise Refused(BAD_FRAME, str(error)) from None
        try:
            ctx = await self.accounts.authenticate(frame["token"])
        except StoreUnavailable as error:  # a Problem too: caught first, it is not the token
            raise Refused(TRY_AGAIN_LATER, error.code) from None
        except Problem as error:
            raise Refused(UNAUTHORIZED, error.code) from None
        if ctx.must_change_password:
            raise Refused(FORBIDDEN, "must_change_password", ctx.username)
        return ctx, frame.get("cursors", {})

    async def _serve(self, conn: Connection, cursors: dict[str, int]) -> tuple[int, str]:
        """Reads in the socket's own task and writes in one other. A close decided elsewhere
        (a device too slow, a session revoked) or the writer's end interrupts the reading, as
        ``asyncio.timeout`` interrupts what it wraps. Not a task per direction and a wait over
        both: every idle device would hold that task and that wait (about 1.5 KiB)."""
        reading = asyncio.current_task()
        assert reading is not None
        writer = asyncio.ensure_future(self._writer(conn, cursors))
        serving = True
        interrupted = False

        def interrupt(_: object) -> None:
            nonlocal interrupted
            if serving and not interrupted:
                interrupted = True
                reading.cancel()

        writer.add_done_callback(interrupt)
        conn.closing.add_done_callback(interrupt)
        failure: BaseException | None = None
        try:
            await self._reader(conn)
        except asyncio.CancelledError:
            if not interrupted or reading.uncancel() > 0:
                raise  # cancelled from outside (the server stopping), not by us
        except Exception as error:
            failure = error
        finally:
            serving = False
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        if conn.closing.done():
            return conn.closing.result()
        if failure is None and not writer.cancelled():
            failure = writer.exception()
        if isinstance(failure, StoreUnavailable):
            return TRY_AGAIN_LATER, failure.code
        if isinstance(failure, WebSocketDisconnect):
            return failure.code, "client left"
        if failure is not None:
            log.error("websocket failed", exc_info=failure)
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
            for event, frame in await conn.take():
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
                elif event["type"] == "inbox" and not self._deliverable(event["id"]):
                    continue
                await self.ws.send_text(frame)

    def _deliverable(self, inbox_id: int) -> bool:
        if inbox_id in self.inbox_delivered:
            return False
        self.inbox_delivered[inbox_id] = None
        if len(self.inbox_delivered) > INBOX_REMEMBERED:
            del self.inbox_delivered[next(iter(self.inbox_delivered))]
        self.inbox_unacked[inbox_id] = None
        self.inbox_sent = max(self.inbox_sent, inbox_id)
        return True

    async def _replay(self, ctx: AuthContext, cursors: dict[str, int]) -> None:
        """Everything after the given positions, from the store: the inbox first (it carries
        the keys that conversation messages need), then each conversation in order."""
        while True:
            pending = await self.inbox.pending(ctx, self.inbox_sent, REPLAY_PAGE)
            for item in pending:
                if self._deliverable(item["id"]):
                    await self._send(item)
            if len(pending) < REPLAY_PAGE:
                break
        positions = await self.chat.start_positions(ctx.user_id, ctx.device_id, dict(cursors))
        for conv_id, (start, end) in positions.items():
            self.sent[conv_id] = max(start, self.sent.get(conv_id, 0))
            if self.sent[conv_id] < end:
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
            if kind == "send":
                await self._send_message(conn.ctx, frame)
                continue
            if kind != "ack" and not self._within_rate():
                if time.monotonic() - self.warned_at >= 1.0:
                    self.warned_at = time.monotonic()
                    await self._send(
                        {
                            "type": "error",
                            "code": "rate_limited",
                            "message": f"too many frames: at most {FRAME_RATE:g} a second "
                            "besides acks; this one was dropped",
                            "frame": kind,
                        }
                    )
                continue
            if kind == "ping":
                await self._send({"type": "pong"})
            elif kind == "ack":
                self.hub.acks.add(conn.ctx, frame["conversation_id"], frame["seq"])
            elif kind == "inbox_ack":
                done = {i for i in self.inbox_unacked if i <= frame["up_to"]}
                for inbox_id in done:
                    del self.inbox_unacked[inbox_id]
                await self.inbox.ack(conn.ctx, frame["up_to"], only=done)
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

    async def _send_message(self, ctx: AuthContext, frame: dict[str, Any]) -> None:
        """Stores one message as ``POST .../messages`` would and answers ``sent`` once it is
        durable, or an ``error`` naming the message; the connection stays open either way."""
        msg_id = frame.get("client_msg_id")
        answer: dict[str, Any] = {
            "conversation_id": frame["conversation_id"],
            "client_msg_id": msg_id if isinstance(msg_id, str) else None,
        }
        try:
            body = SendMessage.model_validate(
                {k: frame.get(k) for k in ("client_msg_id", "content_type", "body")}
            )
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "frame"
            await self._refuse_send(answer, 422, "invalid_message", f"{field}: {first['msg']}")
            return
        try:
            if self.limits is not None:
                await self.limits.user(ctx.user_id)
            event, created = await self.chat.send(
                ctx,
                frame["conversation_id"],
                body.client_msg_id,
                body.content_type,
                body.body_bytes(),
            )
        except Problem as error:
            # The status and code the same refusal answers over HTTP.
            extra = (
                {"retry_after_s": error.retry_after_s} if isinstance(error, TooManyRequests) else {}
            )
            await self._refuse_send(answer, error.status, error.code, error.message, **extra)
            return
        if created:
            self.hub.metrics.messages.inc()
        await self._send(
            {
                "type": "sent",
                **answer,
                "seq": event["seq"],
                "created_at": event["created_at"],
                "created": created,
            }
        )

    async def _refuse_send(
        self, answer: dict[str, Any], status: int, code: str, message: str, **extra: Any
    ) -> None:
        await self._send(
            {
                "type": "error",
                "frame": "send",
                "status": status,
                "code": code,
                "message": message,
                **answer,
                **extra,
            }
        )

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.allowance = min(FRAME_BURST, self.allowance + (now - self.allowance_at) * FRAME_RATE)
        self.allowance_at = now
        if self.allowance < 1.0:
            return False
        self.allowance -= 1.0
        return True

    async def _send(self, event: dict[str, Any]) -> None:
        await self.ws.send_text(encode(event))

    async def _close(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await asyncio.wait_for(self.ws.close(code, reason[:120]), CLOSE_WAIT_S)
        except TimeoutError:  # it does not read: drop it rather than wait for the kernel
            if self.transport is not None:
                self.transport.abort()
        except Exception:  # the peer may already be gone
            return


def _transport_of(ws: WebSocket) -> asyncio.WriteTransport | None:
    """The socket's transport under Starlette's WebSocket (uvicorn's protocol object is what
    the ASGI ``send`` is bound to; asyncio's or uvloop's); None where none is exposed."""
    protocol = getattr(getattr(ws, "_send", None), "__self__", None)
    transport = getattr(protocol, "transport", None)
    needed = ("get_write_buffer_size", "get_extra_info", "abort")
    if transport is None or not all(hasattr(transport, name) for name in needed):
        return None
    return transport  # type: ignore[no-any-return]


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


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
