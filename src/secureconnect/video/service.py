"""Calls: who may be in one, ringing, the roster, and driving Janus for each participant.

A call belongs to a conversation and to the replica whose Janus hosts it (``owner``). Every join
is checked against the conversation's current members; Janus stands behind that check with its
signed API tokens, the room's secret and a per-device ``allowed`` token, so that knowing Janus's
address is not enough to get in. Each device in the call has one Janus session with a publisher
handle and, once it receives anyone, a subscriber handle.

The roster lives in the store and is published after each change to the devices of every
member who accepted the conversation (``{"type": "call", "call": ...}``): it rings, shows who
is in, and tells clients whom to subscribe to and whom to send their media key (media keys
never pass through here). A stranger's call does not ring a message request, and taking part
in it accepts the request. A call that ends, answered or missed, becomes an entry in the
conversation's timeline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.service import AuthContext
from secureconnect.bus import MEMBERSHIP_TOPIC, Bus, user_topic
from secureconnect.chat.service import ChatService
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from secureconnect.ops.metrics import CallCounts, Metrics
from secureconnect.store import Database
from secureconnect.store.base import new_id
from secureconnect.video import store
from secureconnect.video.janus import Answer, JanusError, JanusSession
from secureconnect.video.schemas import (
    CallOut,
    IceServer,
    JoinOut,
    Jsep,
    StreamOut,
    SubscribeOut,
)
from secureconnect.video.sfu import JanusSupervisor

log = logging.getLogger("secureconnect.video")

CALL_TYPE = "application/vnd.secureconnect.call+json"
MAX_PUBLISHERS = 16
FORWARDED = "x-secureconnect-forwarded"  # marks a request one replica sent on to another
REAP_EVERY_S = 1.0  # a restarted Janus is noticed within this
# The store is read for silent devices and unanswered rings, and heartbeats are written, at most
# this often (and at least 6 times per heartbeat timeout or ring): while media flows, these
# statements are most of what the control plane costs (bench/calls.py; decision 0015).
STORE_ROUND_S = 5.0

# What the ICE servers handed out with a call are made from: (urls, user id) -> servers.
IceSource = Callable[[str], list[IceServer]]


class CallElsewhere(Conflict):
    """The call is hosted by another replica's Janus: the route forwards the request there."""

    def __init__(self, owner: str, url: str | None) -> None:
        super().__init__("call_elsewhere", "this call is hosted by another video-service replica")
        self.owner = owner
        self.url = url


def calls_unavailable() -> Unavailable:
    return Unavailable("calls_unavailable", "calls are unavailable: the SFU is not running")


@dataclass
class Room:
    number: int
    secret: str
    generation: int


@dataclass
class Seat:
    """A device's place in a live call on this replica's Janus."""

    call_id: str
    device_id: str
    user_id: str
    session: JanusSession
    publisher: int
    feed_id: int
    private_id: int
    token: str
    subscriber: int | None = None
    published: bool = False
    streams: list[StreamOut] = field(default_factory=list)


class CallService:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        chat: ChatService,
        sfu: JanusSupervisor | None,
        ice: IceSource,
        metrics: Metrics,
        *,
        ring_s: float,
        heartbeat_timeout_s: float,
        clock: Clock = SYSTEM_CLOCK,
        owner: str | None = None,
        url: str = "",
        record_dir: Path | None = None,
    ) -> None:
        """``owner``: this replica's name in the store; ``url``: where other replicas forward
        requests for the calls it hosts; ``record_dir``: where Janus records the (encrypted)
        media of every room, if anywhere."""
        self.db = db
        self.bus = bus
        self.chat = chat
        self.sfu = sfu
        self.ice = ice
        self.metrics = metrics
        self.ring_ms = int(ring_s * 1000)
        self.heartbeat_ms = int(heartbeat_timeout_s * 1000)
        self.clock = clock
        self.owner = owner or socket.gethostname()
        self.url = url
        self.record_dir = record_dir
        self.rooms: dict[str, Room] = {}
        self.seats: dict[tuple[str, str], Seat] = {}
        self._control: tuple[JanusSession, int] | None = None
        self._epoch = 0  # the Janus generation the rooms and seats here belong to
        self._http: httpx.AsyncClient | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # Heartbeats heard since the last store round, written then in one statement each.
        self._heard: dict[tuple[str, str], int] = {}
        self.store_round_ms = int(
            1000 * max(REAP_EVERY_S, min(STORE_ROUND_S, heartbeat_timeout_s / 6, ring_s / 6))
        )
        self._last_round = 0
        # The calls this replica owned, open, at the last store round, whose seated devices'
        # users were all still members then: a heartbeat for a seat in one of them needs no
        # store read (the round checks everyone in one statement, a removal kicks at once).
        self._vouched: set[str] = set()

    # ----- reading -----------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.sfu.generation if self.sfu is not None else 0

    async def current(self, ctx: AuthContext, conv_id: str) -> CallOut:
        async with self.db.read() as conn:
            await self.chat.require_member(conn, ctx.user_id, conv_id)
            call_id = await store.open_call(conn, conv_id)
            found = await store.describe(conn, call_id, self.ring_ms) if call_id else None
        if found is None:
            raise NotFound("no_call", "there is no call in this conversation")
        return found

    async def open_calls(self, ctx: AuthContext) -> list[CallOut]:
        """The calls going on in conversations the user accepted: for a device that accepts a
        message request during a call, which was not rung (or comes online during one)."""
        async with self.db.read() as conn:
            conv_ids = await self.chat.current_conversations(conn, ctx.user_id, requests=False)
            found = [
                await store.describe(conn, c, self.ring_ms)
                for c in await store.open_calls(conn, conv_ids)
            ]
        return [c for c in found if c is not None]

    async def describe(self, ctx: AuthContext, call_id: str) -> CallOut:
        async with self.db.read() as conn:
            found = await store.describe(conn, call_id, self.ring_ms)
            if found is None:
                raise NotFound("call_not_found", "no such call")
            await self.chat.require_member(conn, ctx.user_id, found.conversation_id)
        return found

    # ----- starting, ringing, declining --------------------------------------------------

    async def start(self, ctx: AuthContext, conv_id: str, media: str) -> tuple[CallOut, bool]:
        """Starts a call and rings every member; if one is already open, returns it."""
        async with self.db.read() as conn:
            await self.chat.require_member(conn, ctx.user_id, conv_id)
        self._require_sfu()
        now = self.clock.now_ms()
        call_id = new_id()
        try:
            async with self.db.write() as conn:
                await self.chat.answer_request(conn, ctx.user_id, conv_id)  # calling back answers
                existing = await store.open_call(conn, conv_id)
                if existing is not None:
                    call_id = existing
                else:
                    await store.insert_call(
                        conn,
                        {
                            "id": call_id,
                            "conversation_id": conv_id,
                            "open_key": conv_id,
                            "media": media,
                            "state": "ringing",
                            "caller_user_id": ctx.user_id,
                            "caller_device_id": ctx.device_id,
                            "owner": self.owner,
                            "owner_url": self.url,
                            "room": secrets.randbelow(2**52) + 1,
                            "created_at": now,
                        },
                    )
                    await self._announce(conn, call_id, conv_id)
        except IntegrityError:  # two people pressed "call" at once: both get the one that won
            async with self.db.read() as conn:
                existing = await store.open_call(conn, conv_id)
            if existing is None:
                raise
        if existing is None:
            self.metrics.calls_started.inc()
        return await self.describe(ctx, call_id), existing is None

    async def decline(self, ctx: AuthContext, call_id: str) -> CallOut:
        """Stops the ringing on all this user's devices; a 1:1 call, or a group call everyone
        else declined, ends as declined."""
        row = await self._open_row(ctx, call_id)
        async with self._lock(call_id), self.db.write() as conn:
            await store.decline(conn, call_id, ctx.user_id, self.clock.now_ms())
            call = await store.describe(conn, call_id, self.ring_ms)
            assert call is not None
            rung = await self.chat.current_member_ids(conn, row.conversation_id, requests=False)
            others = set(rung) - {row.caller_user_id}
            declined = set(await store.declined_ids(conn, call_id))
            if row.state == "ringing" and others <= declined and not self._others_in(call, row):
                await self._end(conn, call_id, "declined")
            else:
                await self._announce(conn, call_id, row.conversation_id)
        await self._cleanup_if_ended(call_id)
        return await self.describe(ctx, call_id)

    # ----- joining and leaving -----------------------------------------------------------

    async def join(self, ctx: AuthContext, call_id: str) -> JoinOut:
        row = await self._open_row(ctx, call_id)
        if row.owner != self.owner:
            row = await self._claim_if_released(row)
        # The device's own Janus session is opened before the call's lock is taken: joins that
        # arrive together wait for each other only for the steps that touch the room.
        session = await JanusSession(self._sfu(), self._janus_event).open()
        try:
            publisher = await session.attach()
        except JanusError:
            await session.close()
            raise
        async with self._lock(call_id):
            try:
                await self._drop_seat(call_id, ctx.device_id)  # a rejoin replaces the old seat
                room = await self._room(call_id, row.room)
                token = secrets.token_urlsafe(24)
                await self._control_request(
                    {
                        "request": "allowed",
                        "room": room.number,
                        "secret": room.secret,
                        "action": "add",
                        "allowed": [token],
                    }
                )
                joined = await session.message(
                    publisher,
                    {
                        "request": "join",
                        "ptype": "publisher",
                        "room": room.number,
                        "display": ctx.device_id,
                        "token": token,
                    },
                )
            except BaseException:
                await session.close()
                raise
            seat = Seat(
                call_id=call_id,
                device_id=ctx.device_id,
                user_id=ctx.user_id,
                session=session,
                publisher=publisher,
                feed_id=int(joined.data["id"]),
                private_id=int(joined.data["private_id"]),
                token=token,
            )
            self.seats[(call_id, ctx.device_id)] = seat
            now = self.clock.now_ms()
            async with self.db.write() as conn:
                await self.chat.answer_request(conn, ctx.user_id, row.conversation_id)
                again = await store.participant(conn, call_id, ctx.device_id)
                await store.seat(
                    conn,
                    {
                        "call_id": call_id,
                        "device_id": ctx.device_id,
                        "user_id": ctx.user_id,
                        "feed_id": seat.feed_id,
                        "publishing": False,
                        "audio": True,
                        "video": row.media == "video",
                        "screen": False,
                        "joined_at": now,
                        "heard_at": now,
                        "left_at": None,
                    },
                    rejoin=again is not None,
                )
                if row.state == "ringing" and ctx.user_id != row.caller_user_id:
                    await store.set_call(conn, call_id, state="live", answered_at=now)
                call = await self._announce(conn, call_id, row.conversation_id)
        assert call is not None  # the row was read and locked in this very transaction
        return JoinOut(call=call, feed_id=seat.feed_id, ice_servers=self.ice(ctx.user_id))

    async def _claim_if_released(self, row: Any) -> Any:
        """A released call (its replica shut down) is taken over by the replica a join lands
        on; a call another live replica hosts is forwarded there."""
        if row.owner:
            raise CallElsewhere(row.owner, row.owner_url)
        async with self.db.write() as conn:
            won = await store.claim(conn, row.id, "", self.owner, self.url)
            fresh = await store.call_row(conn, row.id)
        if not won and fresh.owner != self.owner:
            raise CallElsewhere(fresh.owner, fresh.owner_url)
        log.info("took over call", extra={"fields": {"call_id": row.id}})
        return fresh

    async def take_over(self, call_id: str, was: str) -> bool:
        """The replica hosting a call does not answer: this one hosts it from now on, and its
        devices join again here (the epoch changes)."""
        async with self.db.write() as conn:
            won = await store.claim(conn, call_id, was, self.owner, self.url)
            if won:
                await store.set_call(conn, call_id, sfu_epoch=0)
                row = await store.call_row(conn, call_id)
                await self._announce(conn, call_id, row.conversation_id)
        if won:
            log.warning(
                "took over call from a silent replica", extra={"fields": {"call_id": call_id}}
            )
        return won

    async def release(self) -> None:
        """At shutdown: the calls hosted here are let go (epoch 0), so that their devices join
        again and the replica they reach takes them over."""
        async with self.db.read() as conn:
            rows = await store.owned_calls(conn, self.owner)
        for row in rows:
            async with self.db.write() as conn:
                await store.set_call(conn, row.id, owner="", owner_url=None, sfu_epoch=0)
                await self._announce(conn, row.id, row.conversation_id)
        if rows:
            log.info("released calls", extra={"fields": {"calls": len(rows)}})

    async def forward(self, url: str, method: str, path: str, body: bytes, auth: str) -> Any:
        """A request for a call hosted by another replica, sent on to it (once: a forwarded
        request is never forwarded again). ``httpx.TransportError`` when it does not answer."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=15.0)
        return await self._http.request(
            method,
            url.rstrip("/") + path,
            content=body,
            headers={"authorization": auth, "content-type": "application/json", FORWARDED: "1"},
        )

    async def leave(self, ctx: AuthContext, call_id: str) -> CallOut:
        row = await self._open_row(ctx, call_id, ended_ok=True)
        if row.open_key is not None and row.owner and row.owner != self.owner:
            raise CallElsewhere(row.owner, row.owner_url)
        if row.open_key is not None:
            async with self._lock(call_id):
                await self._leave(call_id, [ctx.device_id])
            await self._cleanup_if_ended(call_id)
        return await self.describe(ctx, call_id)

    async def _leave(self, call_id: str, device_ids: list[str]) -> None:
        """Takes devices out of the call; the last one out ends it. Call under the call's lock."""
        for device_id in device_ids:
            await self._drop_seat(call_id, device_id)
        async with self.db.write() as conn:
            row = await store.call_row(conn, call_id)
            if row is None or row.open_key is None:
                return
            await store.set_participant(conn, call_id, device_ids, left_at=self.clock.now_ms())
            call = await store.describe(conn, call_id, self.ring_ms)
            assert call is not None
            # A 1:1 call ends when either person hangs up (their other devices do not keep it).
            alone = len({p.user_id for p in call.participants}) == 1
            direct = await self.chat.is_direct(conn, row.conversation_id)
            if not call.participants or (direct and alone and row.answered_at):
                await self._end(conn, call_id, "ended" if row.answered_at else "missed")
            else:
                await self._announce(conn, call_id, row.conversation_id)
        await self._cleanup_if_ended(call_id)

    async def heartbeat(self, ctx: AuthContext, call_id: str) -> None:
        """Noted here, written at the next store round: the seat answering is what matters to
        the device, and the silence check reads the store only after that write. A seat in a
        call the last round vouched for answers from memory: heartbeats are most of what a
        call costs this process while media flows (decision 0015)."""
        if call_id not in self._vouched or self._live_seat(call_id, ctx.device_id) is None:
            await self._seat_of(ctx, call_id)
        self._heard[(call_id, ctx.device_id)] = self.clock.now_ms()

    # ----- media negotiation (SDP and ICE pass through to Janus) ------------------------

    async def publish(
        self, ctx: AuthContext, call_id: str, jsep: Jsep, audio: bool, video: bool, screen: bool
    ) -> Jsep:
        seat = await self._seat_of(ctx, call_id)
        answer = await seat.session.message(
            seat.publisher,
            {"request": "configure", "audio": True, "video": True},
            {"type": jsep.type, "sdp": jsep.sdp, "e2ee": True},
        )
        await self._set_flags(ctx, call_id, audio=audio, video=video, screen=screen)
        return _jsep(answer)

    async def subscribe(
        self, ctx: AuthContext, call_id: str, feeds: list[int], restart: bool = False
    ) -> SubscribeOut:
        """Receives exactly these feeds (others' publishers in this call), on one subscriber
        connection: Janus answers with an offer for the client to answer. ``restart``: the
        client starts a new connection, so the handle of its old one must go; an update on
        it would answer "nothing changed" and the new connection would never get an offer."""
        seat = await self._seat_of(ctx, call_id)
        sending = {s.feed_id for s in self.seats.values() if s.call_id == call_id and s.published}
        unknown = [f for f in feeds if f not in sending or f == seat.feed_id]
        if unknown:
            raise Invalid(
                "unknown_feed", f"not the feed of another participant sending media: {unknown[0]}"
            )
        room = self.rooms[call_id]
        if restart and seat.subscriber is not None:
            handle, seat.subscriber, seat.streams = seat.subscriber, None, []
            with contextlib.suppress(JanusError):  # a handle Janus already forgot is gone too
                await seat.session.detach(handle)
        if seat.subscriber is None:
            if not feeds:
                return SubscribeOut(jsep=None, streams=[])
            seat.subscriber = await seat.session.attach()
            answer = await seat.session.message(
                seat.subscriber,
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": room.number,
                    "private_id": seat.private_id,
                    "streams": [{"feed": f} for f in feeds],
                    # The client asks for every change itself. Janus's own offer when a
                    # publisher leaves would go unanswered, and every update after it would
                    # then wait for that answer for ever ("updating").
                    "autoupdate": False,
                },
            )
        else:
            current = {s.feed_id for s in seat.streams}
            add = [{"feed": f} for f in feeds if f not in current]
            drop = [{"feed": f} for f in current if f not in feeds]
            if not add and not drop:
                return SubscribeOut(jsep=None, streams=seat.streams)
            body: dict[str, Any] = {"request": "update"}
            if add:
                body["subscribe"] = add
            if drop:
                body["unsubscribe"] = drop
            answer = await seat.session.message(seat.subscriber, body)
            if answer.data.get("videoroom") == "updating":
                # Janus waits for the answer to an earlier offer of this connection first.
                raise Conflict("subscription_busy", "an earlier offer is not answered yet")
        seat.streams = [
            StreamOut(mid=str(s["mid"]), feed_id=int(s["feed_id"]), kind=str(s.get("type", "")))
            for s in answer.data.get("streams", [])
            if "feed_id" in s and s.get("active", True)
        ]
        return SubscribeOut(jsep=_jsep(answer) if answer.jsep else None, streams=seat.streams)

    async def answer(self, ctx: AuthContext, call_id: str, jsep: Jsep) -> None:
        seat = await self._seat_of(ctx, call_id)
        if seat.subscriber is None:
            raise Invalid("not_subscribed", "subscribe before answering")
        await seat.session.message(
            seat.subscriber,
            {"request": "start"},
            {"type": jsep.type, "sdp": jsep.sdp, "e2ee": True},
        )

    async def trickle(
        self, ctx: AuthContext, call_id: str, target: str, candidate: dict[str, Any] | None
    ) -> None:
        seat = await self._seat_of(ctx, call_id)
        handle = seat.publisher if target == "publisher" else seat.subscriber
        if handle is None:
            raise Invalid("not_subscribed", "subscribe before sending its candidates")
        await seat.session.trickle(handle, candidate)

    async def configure(
        self,
        ctx: AuthContext,
        call_id: str,
        audio: bool | None,
        video: bool | None,
        screen: bool | None,
    ) -> CallOut:
        """Mute, camera and screen state as the roster shows it (the client stops the track)."""
        await self._seat_of(ctx, call_id)
        changed = await self._set_flags(ctx, call_id, audio=audio, video=video, screen=screen)
        return changed or await self.describe(ctx, call_id)

    async def layer(self, ctx: AuthContext, call_id: str, mid: str, substream: int) -> None:
        """Which simulcast layer of a received video this device wants."""
        seat = await self._seat_of(ctx, call_id)
        if seat.subscriber is None:
            raise Invalid("not_subscribed", "subscribe before choosing a layer")
        await seat.session.message(
            seat.subscriber,
            {"request": "configure", "streams": [{"mid": mid, "substream": substream}]},
        )
        # Janus switches layers on a key frame of the new one; ask its sender for one now
        # rather than wait for the encoder's next (which can be minutes away).
        feed = next((s.feed_id for s in seat.streams if s.mid == mid), None)
        if feed is not None:
            await self._keyframe_from(call_id, feed)

    async def keyframe(self, ctx: AuthContext, call_id: str, feed_id: int | None = None) -> None:
        """Asks for a key frame, through Janus. Without ``feed_id``, from this device's own
        encoder: a sender that has just given someone its key sends one, so they need not wait
        for the next. With it, from the sender of a feed this device receives: its frames came
        before their key and were dropped, and the next key frame may be minutes away."""
        seat = await self._seat_of(ctx, call_id)
        if feed_id is None:
            await seat.session.message(seat.publisher, {"request": "configure", "keyframe": True})
            return
        if feed_id not in {s.feed_id for s in seat.streams}:
            raise Invalid("unknown_feed", f"not a feed you receive: {feed_id}")
        await self._keyframe_from(call_id, feed_id)

    async def _keyframe_from(self, call_id: str, feed_id: int) -> None:
        sender = next(
            (s for s in self.seats.values() if s.call_id == call_id and s.feed_id == feed_id), None
        )
        if sender is not None:
            with contextlib.suppress(JanusError):  # a sender that just left needs none
                await sender.session.message(
                    sender.publisher, {"request": "configure", "keyframe": True}
                )

    def counts(self) -> CallCounts:
        seats = list(self.seats.values())
        return CallCounts(
            calls=len(self.rooms),
            participants=len(seats),
            publishers=len({s.device_id for s in seats if s.published}),
            subscribers=len([s for s in seats if s.subscriber is not None]),
            forwarded_streams=sum(len(s.streams) for s in seats),
        )

    def count_decrypt_failures(self, frames: int) -> None:
        self.metrics.media_decrypt_failures.inc(frames)

    # ----- removal of members, Janus restarts, silent devices ----------------------------

    async def member_left(self, conv_id: str, username: str) -> None:
        """Someone removed from (or leaving) the conversation is taken out of its call here:
        Janus kicks their devices, their tokens stop working, and the others see the roster
        change and replace their media keys."""
        async with self.db.read() as conn:
            call_id = await store.open_call(conn, conv_id)
        if call_id is None:
            return
        async with self.db.read() as conn:
            call = await store.describe(conn, call_id, self.ring_ms)
        present = [p.device_id for p in call.participants if p.username == username] if call else []
        await self._remove(call_id, present)

    async def _remove(self, call_id: str, device_ids: list[str]) -> None:
        """Devices of someone no longer a member: Janus kicks those seated here, then they
        leave the call like anyone else."""
        if device_ids:
            async with self._lock(call_id):
                async with self.db.read() as conn:  # those still in it, now that we hold the lock
                    device_ids = [d for d in await store.present(conn, call_id) if d in device_ids]
                room = self.rooms.get(call_id)
                for device_id in device_ids:
                    seat = self.seats.get((call_id, device_id))
                    if seat is not None and room is not None:
                        await self._room_request(room, {"request": "kick", "id": seat.feed_id})
                if device_ids:
                    log.info("removed from call", extra={"fields": {"call_id": call_id}})
                    await self._leave(call_id, device_ids)
        await self._cleanup_if_ended(call_id)

    async def run(self) -> None:
        """Until cancelled: end calls that rang unanswered, drop devices that went silent,
        forget what a restarted Janus lost, and take removed members out of calls."""

        def removed(event: dict[str, Any]) -> None:
            if event.get("kind") != "membership":
                return
            body = json.loads(base64.b64decode(event["body"]))
            if body.get("action") in ("remove", "leave") and isinstance(body.get("user"), str):
                asyncio.get_running_loop().create_task(
                    self.member_left(event["conversation_id"], body["user"])
                )

        unsubscribe = await self.bus.subscribe(MEMBERSHIP_TOPIC, removed)
        try:
            while True:
                await asyncio.sleep(REAP_EVERY_S)
                try:
                    await self._reap()
                except Exception:  # the store may be away; the next round tries again
                    log.exception("call upkeep failed")
        finally:
            await unsubscribe()
            for seat in list(self.seats.values()):
                await seat.session.close()
            if self._control is not None:
                await self._control[0].close()
            if self._http is not None:
                await self._http.aclose()

    async def _reap(self) -> None:
        restarted = self.sfu is not None and self.sfu.state == "up" and self.epoch != self._epoch
        if restarted:
            lost = self._epoch != 0
            self._epoch = self.epoch
            if lost:
                self._forget_janus()
        now = self.clock.now_ms()
        if not restarted and now - self._last_round < self.store_round_ms:
            return
        self._last_round = now
        self._vouched = set()  # until this round has checked them again
        heard, self._heard = self._heard, {}
        if heard:
            try:
                async with self.db.write() as conn:
                    await store.set_heard(conn, [(c, d, t) for (c, d), t in heard.items()])
            except Exception:
                for key, at in heard.items():  # kept for the next round; newer ones win
                    self._heard.setdefault(key, at)
                raise
        # Three statements a round, whatever the number of calls.
        async with self.db.read() as conn:
            rows = await store.owned_calls(conn, self.owner)
            silent = await store.silent(conn, [r.id for r in rows], now - self.heartbeat_ms)
            seated: dict[str, list[Seat]] = {}
            for seat in self.seats.values():
                seated.setdefault(seat.call_id, []).append(seat)
            pairs = {(r.conversation_id, s.user_id) for r in rows for s in seated.get(r.id, [])}
            members = await self.chat.still_members(conn, list(pairs))
        # A removal whose bus event this replica missed still takes them out within a round.
        departed = {
            row.id: [
                s.device_id
                for s in seated.get(row.id, [])
                if (row.conversation_id, s.user_id) not in members
            ]
            for row in rows
        }
        if restarted:  # every device in these calls hears the new epoch, and joins again
            for row in rows:
                async with self.db.write() as conn:
                    await store.set_call(conn, row.id, sfu_epoch=self.epoch)
                    await self._announce(conn, row.id, row.conversation_id)
        for row in rows:
            # Still "ringing" means nobody but the caller has answered.
            if row.state == "ringing" and now - row.created_at > self.ring_ms:
                async with self._lock(row.id), self.db.write() as conn:
                    await self._end(conn, row.id, "missed")
                await self._cleanup_if_ended(row.id)
            elif departed[row.id]:
                await self._remove(row.id, departed[row.id])
            elif silent.get(row.id):
                async with self._lock(row.id):
                    await self._leave(row.id, silent[row.id])
                await self._cleanup_if_ended(row.id)
        self._vouched = {row.id for row in rows if not departed[row.id]}

    def _forget_janus(self) -> None:
        """Janus restarted: the rooms and sessions of the old one are gone (a seat taken in
        the new one meanwhile stays). Clients see ``sfu_epoch`` change and join again; the
        rooms are made anew on the first join."""
        log.warning("janus restarted: calls rejoin", extra={"fields": {"epoch": self.epoch}})
        if self._control is not None and self._control[0].generation != self.epoch:
            self._control = None
        for call_id in [c for c, room in self.rooms.items() if room.generation != self.epoch]:
            del self.rooms[call_id]
        for key in [k for k, seat in self.seats.items() if seat.session.generation != self.epoch]:
            seat = self.seats.pop(key)
            seat.session.id = 0  # nothing to destroy in the new Janus
            asyncio.get_running_loop().create_task(seat.session.close())

    # ----- helpers -----------------------------------------------------------------------

    def _janus_event(self, handle: int, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        seat = next((s for s in self.seats.values() if handle in (s.publisher, s.subscriber)), None)
        if kind == "webrtcup":
            self.metrics.ice_connected.inc()
            if seat is not None and handle == seat.publisher:
                seat.published = True
                asyncio.get_running_loop().create_task(self._publishing(seat))
        elif kind == "hangup":
            reason = str(event.get("reason", ""))
            if "ICE" in reason:
                self.metrics.ice_failures.inc()
            if seat is not None and handle == seat.publisher and seat.published:
                # Janus dropped the feed with its connection: no one may be told to subscribe
                # to it ("No such feed" for every update that names it) until it is back.
                seat.published = False
                asyncio.get_running_loop().create_task(self._publishing(seat))

    async def _publishing(self, seat: Seat) -> None:
        """The roster says what Janus last said of this seat's feed: up, or dropped."""
        if self.seats.get((seat.call_id, seat.device_id)) is not seat:
            return  # replaced or gone meanwhile: its own join or leave told everyone
        async with self.db.write() as conn:
            await store.set_participant(
                conn, seat.call_id, [seat.device_id], publishing=seat.published
            )
            row = await store.call_row(conn, seat.call_id)
            await self._announce(conn, seat.call_id, row.conversation_id)

    async def _set_flags(
        self, ctx: AuthContext, call_id: str, **flags: bool | None
    ) -> CallOut | None:
        values = {k: v for k, v in flags.items() if v is not None}
        if not values:
            return None
        async with self.db.write() as conn:
            await store.set_participant(conn, call_id, [ctx.device_id], **values)
            row = await store.call_row(conn, call_id)
            return await self._announce(conn, call_id, row.conversation_id)

    async def _announce(self, conn: AsyncConnection, call_id: str, conv_id: str) -> CallOut | None:
        """Every member's devices get the call as it now stands, once this commits. The version
        goes up under the row's lock, so devices can tell a late event from a new one. The
        call is returned too: the device that caused the change gets the same version in its
        answer, with no second read. A message request's devices are not told: a stranger's
        call does not ring, and its end reaches them as the timeline's missed call."""
        await store.bump_version(conn, call_id)
        call = await store.describe(conn, call_id, self.ring_ms)
        members = await self.chat.current_member_ids(conn, conv_id, requests=False)
        if call is not None:
            event = {"type": "call", "call": call.model_dump(mode="json")}
            self.db.publish_on_commit(conn, [user_topic(u) for u in members], event)
        return call

    async def _end(self, conn: AsyncConnection, call_id: str, outcome: str) -> None:
        """Closes the call and writes it into the conversation's timeline (who, when, how
        long): the server knows that a call happened, never what was said."""
        now = self.clock.now_ms()
        row = await store.call_row(conn, call_id)
        await store.set_participant(conn, call_id, await store.present(conn, call_id), left_at=now)
        await store.set_call(
            conn, call_id, state="ended", outcome=outcome, ended_at=now, open_key=None
        )
        body = {
            "call_id": call_id,
            "media": row.media,
            "outcome": outcome,
            "started_at": row.created_at,
            "answered_at": row.answered_at,
            "ended_at": now,
            "duration_ms": now - row.answered_at if row.answered_at else 0,
            "participants": await store.ever_joined(conn, call_id),
        }
        await self.chat.record(
            conn,
            row.conversation_id,
            row.caller_user_id,
            row.caller_device_id,
            "call",
            CALL_TYPE,
            body,
        )
        await self._announce(conn, call_id, row.conversation_id)
        self.metrics.calls_ended.labels(outcome=outcome).inc()

    async def _cleanup_if_ended(self, call_id: str) -> None:
        async with self.db.read() as conn:
            row = await store.call_row(conn, call_id)
        if row is None or row.open_key is not None:
            return
        for c, device_id in [k for k in self.seats if k[0] == call_id]:
            await self._drop_seat(c, device_id)
        room = self.rooms.pop(call_id, None)
        if room is not None:
            await self._room_request(room, {"request": "destroy"})
        self._locks.pop(call_id, None)

    async def _drop_seat(self, call_id: str, device_id: str) -> None:
        seat = self.seats.pop((call_id, device_id), None)
        if seat is None:
            return
        room = self.rooms.get(call_id)
        if room is not None:
            await self._room_request(
                room, {"request": "allowed", "action": "remove", "allowed": [seat.token]}
            )
        await seat.session.close()

    async def _room(self, call_id: str, number: int) -> Room:
        room = self.rooms.get(call_id)
        if room is not None and room.generation == self.epoch:
            return room
        sfu = self._sfu()
        assert sfu.config is not None
        room = Room(number=number, secret=secrets.token_urlsafe(24), generation=self.epoch)
        recording: dict[str, Any] = {}
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            recording = {"record": True, "rec_dir": str(self.record_dir)}
        await self._control_request(
            {
                **recording,
                "request": "create",
                "room": number,
                "admin_key": sfu.config.admin_key,
                "secret": room.secret,
                "is_private": True,
                "publishers": MAX_PUBLISHERS,
                "require_pvtid": True,
                "require_e2ee": True,
                "allowed": [],
                "audiocodec": "opus",
                "videocodec": "vp8",
                "permanent": False,
            }
        )
        self.rooms[call_id] = room
        async with self.db.write() as conn:
            await store.set_call(conn, call_id, sfu_epoch=self.epoch)
        return room

    async def _room_request(self, room: Room, body: dict[str, Any]) -> None:
        """A best-effort request about a room (kick, revoke a token, destroy): a Janus that is
        away took the room with it."""
        with contextlib.suppress(JanusError):
            await self._control_request({**body, "room": room.number, "secret": room.secret})

    async def _control_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Room administration goes through one session of video-service's own."""
        sfu = self._sfu()
        if self._control is None or self._control[0].generation != sfu.generation:
            session = await JanusSession(sfu).open()
            self._control = (session, await session.attach())
        session, handle = self._control
        return await session.request(handle, body)

    def _sfu(self) -> JanusSupervisor:
        if self.sfu is None or self.sfu.state != "up":
            raise calls_unavailable()
        return self.sfu

    def _require_sfu(self) -> None:
        self._sfu()

    async def _open_row(self, ctx: AuthContext, call_id: str, ended_ok: bool = False) -> Any:
        async with self.db.read() as conn:
            row = await store.call_row(conn, call_id)
            if row is None:
                raise NotFound("call_not_found", "no such call")
            await self.chat.require_member(conn, ctx.user_id, row.conversation_id)
        if row.open_key is None and not ended_ok:
            raise Conflict("call_ended", "this call has ended")
        return row

    async def _seat_of(self, ctx: AuthContext, call_id: str) -> Seat:
        row = await self._open_row(ctx, call_id)
        seat = self._live_seat(call_id, ctx.device_id)
        if seat is None:
            if row.owner != self.owner:
                raise CallElsewhere(row.owner, row.owner_url)
            raise Forbidden("not_in_call", "join the call first")
        return seat

    def _live_seat(self, call_id: str, device_id: str) -> Seat | None:
        """The device's seat in this call on the Janus now running, if it has one here."""
        seat = self.seats.get((call_id, device_id))
        return seat if seat is not None and seat.session.generation == self.epoch else None

    @staticmethod
    def _others_in(call: CallOut, row: Any) -> bool:
        return any(p.user_id != row.caller_user_id for p in call.participants)

    def _lock(self, call_id: str) -> asyncio.Lock:
        return self._locks.setdefault(call_id, asyncio.Lock())


def _jsep(answer: Answer) -> Jsep:
    if answer.jsep is None:
        raise JanusError(0, "janus sent no SDP")
    return Jsep(type=answer.jsep["type"], sdp=answer.jsep["sdp"])
