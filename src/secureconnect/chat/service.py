"""Chat logic: conversations, membership, the ordered timeline, receipts and device cursors.

Ordering and durability: a message takes the next sequence number of its conversation while the
conversation row is locked, in the same transaction that stores it; the sender is answered only
after that transaction commits. Sequence numbers are therefore gap-free and commit in order, so a
device's position in a conversation is one integer and "everything after N" is never incomplete.

Publishing to the bus happens after commit and may be lost; devices fill any gap from the store.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.service import AuthContext, normalise_username
from secureconnect.bus import MEMBERSHIP_TOPIC, Bus, user_topic
from secureconnect.chat import store
from secureconnect.chat.schemas import ConversationOut, MemberOut, ReceiptOut
from secureconnect.chat.store import Membership
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from secureconnect.store import Database
from secureconnect.store.base import new_id

MEMBERSHIP_TYPE = "application/vnd.secureconnect.membership+json"
# Typing relays per person and conversation: "still typing" at most every TYPING_REPEAT_MS (the
# web client repeats it every 3 s and shows it for 6), any change at most every TYPING_MIN_MS.
# Whatever a client sends beyond that is dropped: 5,000 frames a second reach nobody.
TYPING_REPEAT_MS = 2500
TYPING_MIN_MS = 500
TYPING_REMEMBERED = 10_000


@dataclass(frozen=True)
class Ack:
    """A device saying it has received a conversation up to ``seq``."""

    user_id: str
    username: str
    device_id: str
    conversation_id: str
    seq: int


@dataclass(frozen=True)
class Moved:
    """A user's receipt that moved forward: it now covers the messages in ``low < seq <= high``."""

    conversation_id: str
    receipt: dict[str, Any]
    low: int
    high: int


def _receipts_event(conv_id: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "receipts",
        "conversation_id": conv_id,
        "receipts": [
            {k: e[k] for k in ("user_id", "username", "delivered_seq", "read_seq")} for e in entries
        ],
    }


def _receipt_notices(
    conv_id: str, spans: Mapping[str, tuple[int, int]], changes: Sequence[Moved]
) -> list[tuple[list[str], dict[str, Any]]]:
    """Receipts go to the people whose messages they cover (as Signal sends them to a message's
    sender), one frame per conversation and batch listing every receipt that concerns them: the
    frames a message causes grow with the room, not with its square. Senders told the same list
    share one event."""
    by_entries: dict[tuple[int, ...], list[str]] = {}
    for sender, (first, last) in spans.items():
        concerned = tuple(
            i
            for i, m in enumerate(changes)
            if m.receipt["user_id"] != sender and m.low < last and first <= m.high
        )
        if concerned:
            by_entries.setdefault(concerned, []).append(sender)
    return [
        (senders, _receipts_event(conv_id, [changes[i].receipt for i in entries]))
        for entries, senders in by_entries.items()
    ]


class ChatService:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        max_message_bytes: int,
        history_page_max: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.clock = clock
        self.bus = bus
        self.max_message_bytes = max_message_bytes
        self.history_page_max = history_page_max
        self._typing: dict[tuple[str, str], tuple[bool, int]] = {}  # (user, conv) -> last relay

    # ----- conversations -------------------------------------------------------------------

    async def create(
        self, ctx: AuthContext, kind: str, usernames: Sequence[str], name: str | None
    ) -> tuple[ConversationOut, bool]:
        """Creates a conversation; for a 1:1 that already exists, returns it (``created`` False)."""
        others = sorted({normalise_username(u) for u in usernames} - {ctx.username})
        if kind == "direct" and len(others) != 1:
            raise Invalid("invalid_members", "a direct conversation has exactly one other person")
        ids = await self._resolve(others)
        direct_key = ":".join(sorted([ctx.user_id, *ids.values()])) if kind == "direct" else None
        if direct_key is not None:
            existing = await self._direct(direct_key)
            if existing is not None:
                await self._reopen_direct(ctx, existing, ids)
                return await self.describe(ctx.user_id, existing), False
        conv_id = new_id()
        now = self.clock.now_ms()
        member_ids = [ctx.user_id, *ids.values()]
        body = {"action": "create", "actor": ctx.username, "members": [ctx.username, *others]}
        if name:
            body["name"] = name
        try:
            async with self.db.write() as conn:
                asked = await self._requests(conn, ctx, ids)
                await store.insert_conversation(
                    conn, conv_id, kind, name, direct_key, ctx.user_id, now
                )
                for uid in member_ids:
                    # A group's creator is its admin; both people of a 1:1 are.
                    role = "admin" if uid == ctx.user_id or kind == "direct" else "member"
                    await store.join(
                        conn,
                        conv_id,
                        uid,
                        role,
                        joined_seq=0,
                        rejoin=False,
                        requested_by=asked.get(uid),
                    )
                event = await self._membership_event(conn, ctx, conv_id, 1, body)
                self._publish(conn, member_ids, event)
        except IntegrityError:
            # Two people opened the same 1:1 at the same moment: both get the one that won.
            if direct_key is None:
                raise
            winner = await self._direct(direct_key)
            if winner is None:
                raise
            return await self.describe(ctx.user_id, winner), False
        return await self.describe(ctx.user_id, conv_id), True

    async def describe(self, user_id: str, conv_id: str) -> ConversationOut:
        listed = await self.list_for(user_id, only=conv_id)
        if not listed:
            raise NotFound("conversation_not_found", "no such conversation")
        return listed[0]

    async def list_for(self, user_id: str, only: str | None = None) -> list[ConversationOut]:
        """The user's conversations, newest activity first, with unread counts."""
        async with self.db.read() as conn:
            rows = await store.conversation_rows(conn, user_id, only)
            if not rows:
                return []
            conv_ids = [r.id for r in rows]
            unread = await store.unread(conn, user_id, conv_ids)
            roster = await store.current_usernames(conn, conv_ids)
        out = [
            ConversationOut(
                id=r.id,
                request=r.requested_by is not None and r.left_seq is None,
                requested_by=r.requested_by if r.left_seq is None else None,
                kind=r.kind,
                name=r.name,
                avatar=r.avatar,
                created_at=r.created_at,
                last_at=r.last_at,
                last_seq=r.last_seq if r.left_seq is None else r.left_seq,
                role=r.role,
                joined_seq=r.joined_seq,
                left=r.left_seq is not None,
                read_seq=r.read_seq,
                delivered_seq=r.delivered_seq,
                unread=unread.get(r.id, 0),
                members=roster.get(r.id, []),
            )
            for r in rows
            # A 1:1 one has left is a request declined: it is gone for them (a group they left
            # keeps what they saw).
            if not (r.kind == "direct" and r.left_seq is not None)
        ]
        out.sort(key=lambda c: (c.last_at, c.id), reverse=True)
        return out

    async def require_member(self, conn: AsyncConnection, user_id: str, conv_id: str) -> None:
        """For the other domains (calls): only a current member may act in a conversation.
        In the caller's own transaction, and one member row rather than the whole roster:
        calls check it on every request, ICE candidates included."""
        ever, left_seq = await store.membership_left(conn, conv_id, user_id)
        if not ever:
            raise NotFound("conversation_not_found", "no such conversation")
        if left_seq is not None:
            raise Forbidden("not_a_member", "you are no longer a member of this conversation")

    async def still_members(
        self, conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Of these (conversation, user) pairs, the current members: for calls, which check
        everyone they seat in one statement a round rather than one per heartbeat."""
        return await store.still_members(conn, pairs)

    async def is_direct(self, conn: AsyncConnection, conv_id: str) -> bool:
        return await store.conversation_kind(conn, conv_id) == "direct"

    async def current_member_ids(
        self, conn: AsyncConnection, conv_id: str, *, requests: bool = True
    ) -> list[str]:
        """Without ``requests``: those who accepted the conversation, the ones a call rings
        (a stranger's call waits as their message request does, Signal's rule)."""
        return [r.id for r in await store.current_members(conn, conv_id, requests=requests)]

    async def answer_request(self, conn: AsyncConnection, user_id: str, conv_id: str) -> None:
        """Taking part in a call answers a message request as a reply does (decision 0026),
        in the caller's transaction (nothing changes if it was not one)."""
        await store.accept_request(conn, conv_id, user_id)

    async def record(
        self,
        conn: AsyncConnection,
        conv_id: str,
        actor_id: str,
        actor_device_id: str,
        kind: str,
        content_type: str,
        body: dict[str, Any],
    ) -> dict[str, Any]:
        """A server-written entry in the timeline (a call that happened), inside the caller's
        transaction, published to the current members once it commits."""
        roster = await store.roster(conn, conv_id, actor_id, lock=True)
        seq = roster.me.last_seq + 1
        await store.bump(conn, conv_id, seq)
        username = await store.username_of(conn, actor_id)
        actor = AuthContext(
            user_id=actor_id, username=username, device_id=actor_device_id, session_id=""
        )
        event = await store.insert_event(
            conn, self.clock.now_ms(), conv_id, seq, actor, kind, content_type, _json(body), None
        )
        self._publish(conn, roster.current, event)
        return event

    async def members_of(self, user_id: str, conv_id: str) -> list[MemberOut]:
        async with self.db.read() as conn:
            await store.roster(conn, conv_id, user_id)
            rows = await store.current_members(conn, conv_id)
            return [
                MemberOut(user_id=r.id, username=r.username, role=r.role, joined_seq=r.joined_seq)
                for r in rows
            ]

    async def add_member(self, ctx: AuthContext, conv_id: str, username: str) -> dict[str, Any]:
        name = normalise_username(username)
        target = (await self._resolve([name]))[name]
        async with self.db.write() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
            me = roster.me
            self._require_admin_of_group(me)
            existing = roster.rows.get(target)
            if existing is not None and existing[2] is None:
                raise Conflict("already_member", f"{name} is already a member")
            asked = await self._requests(conn, ctx, {name: target})
            seq = me.last_seq + 1
            await store.bump(conn, conv_id, seq)
            body = {"action": "add", "actor": ctx.username, "user": name}
            event = await self._membership_event(conn, ctx, conv_id, seq, body)
            # They see the timeline from their own "added" event on, never what came before.
            await store.join(
                conn,
                conv_id,
                target,
                "member",
                joined_seq=seq - 1,
                rejoin=existing is not None,
                requested_by=asked[target],
            )
            self._publish(conn, [*roster.current, target], event)
        return event

    async def remove_member(self, ctx: AuthContext, conv_id: str, username: str) -> dict[str, Any]:
        """An admin removes someone, or anyone leaves (removing themselves)."""
        name = normalise_username(username)
        leaving = name == ctx.username
        target = ctx.user_id if leaving else (await self._resolve([name]))[name]
        async with self.db.write() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
            me = roster.me
            if me.kind == "direct":
                raise Invalid("direct_conversation", "a direct conversation has fixed members")
            if not me.current:
                raise Forbidden("not_a_member", "you are no longer a member of this conversation")
            if not leaving:
                self._require_admin_of_group(me)
            row = roster.rows.get(target)
            if row is None or row[2] is not None:
                raise NotFound("not_a_member", f"{name} is not a member of this conversation")
            recipients = roster.current
            seq = me.last_seq + 1
            await store.bump(conn, conv_id, seq)
            body = {"action": "leave" if leaving else "remove", "actor": ctx.username, "user": name}
            event = await self._membership_event(conn, ctx, conv_id, seq, body)
            await store.leave(conn, conv_id, target, seq)
            await self._keep_an_admin(conn, conv_id)
            self._publish(conn, recipients, event, MEMBERSHIP_TOPIC)
        return event

    # ----- what the server itself says in a timeline (names and pictures) --------------------

    async def announce(
        self,
        conn: AsyncConnection,
        ctx: AuthContext,
        conv_id: str,
        body: dict[str, Any],
        *,
        admin: bool = False,
    ) -> dict[str, Any]:
        """A change everyone in the conversation sees as a timeline event, in the caller's
        transaction (so that the change and its event commit together). ``admin``: only a
        group admin may make it."""
        roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
        if admin:
            self._require_admin_of_group(roster.me, "change the group's name or picture")
        elif not roster.me.current:
            raise Forbidden("not_a_member", "you are no longer a member of this conversation")
        seq = roster.me.last_seq + 1
        await store.bump(conn, conv_id, seq)
        event = await self._membership_event(conn, ctx, conv_id, seq, body)
        self._publish(conn, roster.current, event)
        return event

    async def rename(self, ctx: AuthContext, conv_id: str, name: str) -> dict[str, Any]:
        name = " ".join(name.split())
        if not name:
            raise Invalid("invalid_name", "a group's name cannot be empty")
        async with self.db.write() as conn:
            event = await self.announce(
                conn,
                ctx,
                conv_id,
                {"action": "rename", "actor": ctx.username, "name": name},
                admin=True,
            )
            await store.set_name(conn, conv_id, name)
        return event

    async def current_conversations(
        self, conn: AsyncConnection, user_id: str, *, requests: bool = True
    ) -> list[str]:
        """The conversations the user is in now, oldest first; without ``requests``, only
        those they accepted."""
        return await store.current_conversation_ids(conn, user_id, requests=requests)

    # ----- message requests ----------------------------------------------------------------

    async def _requests(
        self, conn: AsyncConnection, ctx: AuthContext, others: Mapping[str, str]
    ) -> dict[str, str | None]:
        """For each person (name -> id) the caller puts in a conversation: None when they are
        in contact (an accepted conversation in common), else the caller's id, which makes
        their membership a message request that they accept, decline or block. Someone who
        blocked the caller is answered as an unknown name is."""
        await self._refuse_if_blocked(conn, ctx, others)
        ids = list(others.values())
        contacts = await store.contacts_among(conn, ctx.user_id, ids)
        return {uid: None if uid in contacts else ctx.user_id for uid in ids}

    async def _refuse_if_blocked(
        self, conn: AsyncConnection, ctx: AuthContext, others: Mapping[str, str]
    ) -> None:
        refusing = await store.blocking(conn, ctx.user_id, list(others.values()))
        if refusing:
            names = sorted(n for n, uid in others.items() if uid in refusing)
            raise NotFound("user_not_found", f"no such user: {', '.join(names)}")

    async def _reopen_direct(
        self, ctx: AuthContext, conv_id: str, others: Mapping[str, str]
    ) -> None:
        """Starting a 1:1 that exists: someone who blocked the caller is not there for them; a
        caller who had a request from the other accepts it, and one who had declined comes
        back (from now on). Read first: the common case (an ordinary 1:1, which the CLI opens
        for every ``@name``) changes nothing and takes no write lock."""
        async with self.db.read() as conn:
            await self._refuse_if_blocked(conn, ctx, others)
            seen = (await store.roster(conn, conv_id, ctx.user_id)).me
        if seen.current and seen.requested_by is None:
            return
        async with self.db.write() as conn:
            me = (await store.roster(conn, conv_id, ctx.user_id, lock=True)).me
            if me.current and me.requested_by is not None:
                await store.accept_request(conn, conv_id, ctx.user_id)
            elif not me.current:
                await store.join(
                    conn, conv_id, ctx.user_id, me.role, joined_seq=me.last_seq, rejoin=True
                )

    async def accept(self, ctx: AuthContext, conv_id: str) -> ConversationOut:
        """Accepts a message request (a conversation already accepted stays as it is)."""
        async with self.db.write() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
            if not roster.me.current:
                raise Forbidden("not_a_member", "you are no longer a member of this conversation")
            if roster.me.requested_by is not None:
                await store.accept_request(conn, conv_id, ctx.user_id)
        return await self.describe(ctx.user_id, conv_id)

    async def decline(self, ctx: AuthContext, conv_id: str, block: bool) -> None:
        """Declines a message request: out of the group (as leaving), or out of the 1:1 without
        a word to the other person; with ``block``, the one who asked can no longer put the
        caller in a conversation."""
        async with self.db.write() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
            me = roster.me
            if not me.current or me.requested_by is None:
                raise Conflict("not_a_request", "this conversation is not a message request")
            if block:
                await store.block(conn, ctx.user_id, me.requested_by, self.clock.now_ms())
            if me.kind == "direct":
                await store.leave(conn, conv_id, ctx.user_id, me.last_seq)
                return
        await self.remove_member(ctx, conv_id, ctx.username)

    async def blocked(self, ctx: AuthContext) -> list[str]:
        async with self.db.read() as conn:
            return await store.blocked_usernames(conn, ctx.user_id)

    async def unblock(self, ctx: AuthContext, username: str) -> None:
        name = normalise_username(username)
        async with self.db.write() as conn:
            found = await store.user_ids(conn, [name])
            if name not in found or not await store.unblock(conn, ctx.user_id, found[name]):
                raise NotFound("not_blocked", f"you have not blocked {name}")

    # ----- messages ------------------------------------------------------------------------

    async def send(
        self, ctx: AuthContext, conv_id: str, client_msg_id: str, content_type: str, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        """Stores a message and returns it once durable; a retried ``client_msg_id`` returns the
        original (``created`` False) instead of storing it twice."""
        if len(body) > self.max_message_bytes:
            raise TooLarge(
                "message_too_large",
                f"message body is {len(body)} bytes; the limit is {self.max_message_bytes}",
            )
        if not body:
            raise Invalid("empty_message", "message body is empty")
        # Receivers take a message as the end of its sender's "typing": so does the relay.
        self._typing.pop((ctx.user_id, conv_id), None)
        try:
            return await self._send_once(ctx, conv_id, client_msg_id, content_type, body)
        except IntegrityError:
            # The same retry raced itself on another connection; the first one won.
            existing = await self._by_client_id(ctx, conv_id, client_msg_id)
            if existing is None:
                raise
            return self._same_or_conflict(existing, content_type, body), False

    async def _send_once(
        self, ctx: AuthContext, conv_id: str, client_msg_id: str, content_type: str, body: bytes
    ) -> tuple[dict[str, Any], bool]:
        # A retry needs no lookup here: the unique (conversation, device, client_msg_id) index
        # refuses the second insert, the transaction rolls back, and send() answers with the
        # original. The common case, a new message, costs three statements.
        async with self.db.write() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id, lock=True)
            if not roster.me.current:
                existing = await self._by_client_id(ctx, conv_id, client_msg_id, conn)
                if existing is not None:
                    return self._same_or_conflict(existing, content_type, body), False
                raise Forbidden("not_a_member", "you are no longer a member of this conversation")
            if roster.me.requested_by is not None:  # replying to a request accepts it
                await store.accept_request(conn, conv_id, ctx.user_id)
            seq = roster.me.last_seq + 1
            await store.bump(conn, conv_id, seq)
            event = await store.insert_event(
                conn,
                self.clock.now_ms(),
                conv_id,
                seq,
                ctx,
                "message",
                content_type,
                body,
                client_msg_id,
            )
            self._publish(conn, roster.current, event)
        return event, True

    def _same_or_conflict(
        self, existing: dict[str, Any], content_type: str, body: bytes
    ) -> dict[str, Any]:
        if existing["content_type"] != content_type or base64.b64decode(existing["body"]) != body:
            raise Conflict(
                "client_msg_id_reused",
                "this client_msg_id was already used for a different message",
            )
        return existing

    async def history(
        self, user_id: str, conv_id: str, *, after: int | None, before: int | None, limit: int
    ) -> dict[str, Any]:
        """A page of the part of the timeline this user may see, oldest first."""
        if not 1 <= limit <= self.history_page_max:
            raise Invalid("invalid_range", f"limit must be between 1 and {self.history_page_max}")
        if after is not None and before is not None:
            raise Invalid("invalid_range", "give either 'after' or 'before', not both")
        if (after is not None and after < 0) or (before is not None and before < 1):
            raise Invalid("invalid_range", "'after' must be >= 0 and 'before' >= 1")
        async with self.db.read() as conn:
            me = (await store.roster(conn, conv_id, user_id)).me
            top = me.visible_until
            if after is not None and after > top:
                raise Invalid(
                    "invalid_range", f"'after' is {after}, beyond the last sequence number {top}"
                )
            if before is not None:
                lo, hi = me.joined_seq, min(before - 1, top)
                rows = await store.events_between(conn, conv_id, lo, hi, limit, newest=True)
                rows.reverse()
                has_more = bool(rows) and rows[0]["seq"] > me.joined_seq + 1
            else:
                lo = max(after or 0, me.joined_seq)
                rows = await store.events_between(conn, conv_id, lo, top, limit)
                has_more = bool(rows) and rows[-1]["seq"] < top
        return {"events": rows, "has_more": has_more, "last_seq": top, "joined_seq": me.joined_seq}

    async def events_after(
        self, user_id: str, conv_id: str, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """The realtime path's catch-up: visible events after ``after``, at most ``limit``."""
        async with self.db.read() as conn:
            me = (await store.roster(conn, conv_id, user_id)).me
            return await store.events_between(
                conn, conv_id, max(after, me.joined_seq), me.visible_until, limit
            )

    # ----- receipts, cursors, typing --------------------------------------------------------

    async def mark(
        self, ctx: AuthContext, conv_id: str, delivered: int | None, read: int | None
    ) -> dict[str, Any]:
        """Moves this user's delivered/read marks forward (never back); reading implies delivery.

        The people told are the senders of the messages the mark covers, and the user's own
        other devices (so that they clear the unread count); not every member.
        """
        if delivered is None and read is None:
            raise Invalid("invalid_receipt", "give 'delivered_seq' or 'read_seq'")
        async with self.db.write() as conn:
            me = (await store.roster(conn, conv_id, ctx.user_id)).me
            for value in (delivered, read):
                if value is not None and not 0 <= value <= me.visible_until:
                    raise Invalid(
                        "invalid_range", f"sequence number {value} is outside 0..{me.visible_until}"
                    )
            before = await store.receipt(conn, conv_id, ctx.user_id, ctx.username)
            read_seq = read or 0
            delivered_seq = max(delivered or 0, read_seq)
            await store.raise_receipts(conn, [(conv_id, ctx.user_id, delivered_seq, read_seq)])
            after = await store.receipt(conn, conv_id, ctx.user_id, ctx.username)
            if after == before:
                return after
            # Read <= delivered, so the messages whose state changed are those after the old
            # read mark, up to the new delivered mark.
            low, high = before["read_seq"], after["delivered_seq"]
            spans = await store.sender_spans(conn, conv_id, low, high)
            notices = _receipt_notices(conv_id, spans, [Moved(conv_id, after, low, high)])
            notices.append(([ctx.user_id], _receipts_event(conv_id, [after])))
            for recipients, event in notices:
                self._publish(conn, recipients, event)
        return after

    async def receipts_of(self, user_id: str, conv_id: str) -> list[ReceiptOut]:
        async with self.db.read() as conn:
            await store.roster(conn, conv_id, user_id)
            return [
                ReceiptOut.model_validate(r._mapping)
                for r in await store.receipt_marks(conn, conv_id)
            ]

    async def ack(self, acks: Sequence[Ack]) -> None:
        """Records how far devices have received conversations, in one transaction for a whole
        batch (every device of this process that acked since the last flush). A device's
        position is also its user's delivery receipt; the senders of the messages it covers
        are told, once per conversation and batch. Positions in conversations the user cannot
        see are ignored."""
        if not acks:
            return
        conv_ids = sorted({a.conversation_id for a in acks})
        user_ids = sorted({a.user_id for a in acks})
        async with self.db.write() as conn:
            rows = await store.positions(conn, conv_ids, user_ids)
            seen = {(r.conversation_id, r.user_id): r for r in rows}
            cursors: dict[tuple[str, str], int] = {}
            best: dict[tuple[str, str], tuple[Ack, int]] = {}
            for a in acks:
                row = seen.get((a.conversation_id, a.user_id))
                if row is None:
                    continue
                until = row.last_seq if row.left_seq is None else row.left_seq
                seq = min(a.seq, until)
                if seq <= 0:
                    continue
                key = (a.device_id, a.conversation_id)
                cursors[key] = max(seq, cursors.get(key, 0))
                mark = (a.conversation_id, a.user_id)
                if seq > best.get(mark, (a, 0))[1]:
                    best[mark] = (a, seq)
            if cursors:
                await store.raise_cursors(conn, cursors)
            moved: list[Moved] = []
            for (conv_id, user_id), (a, seq) in sorted(best.items(), key=lambda kv: kv[0]):
                row = seen[(conv_id, user_id)]
                if seq <= row.delivered_seq:
                    continue
                receipt = {
                    "conversation_id": conv_id,
                    "user_id": user_id,
                    "username": a.username,
                    "delivered_seq": seq,
                    "read_seq": row.read_seq,
                }
                moved.append(Moved(conv_id, receipt, row.delivered_seq, seq))
            if moved:
                # read 0 with keep_max: the read mark stays where it is.
                await store.raise_receipts(
                    conn, [(m.conversation_id, m.receipt["user_id"], m.high, 0) for m in moved]
                )
            by_conv: dict[str, list[Moved]] = {}
            for m in moved:
                by_conv.setdefault(m.conversation_id, []).append(m)
            notices = []
            for conv_id, changes in by_conv.items():
                low = min(m.low for m in changes)
                high = max(m.high for m in changes)
                spans = await store.sender_spans(conn, conv_id, low, high)
                notices += _receipt_notices(conv_id, spans, changes)
            for recipients, event in notices:
                self._publish(conn, recipients, event)

    async def start_positions(
        self, user_id: str, device_id: str, claimed: dict[str, int]
    ) -> dict[str, tuple[int, int]]:
        """Where a device's stream resumes in each conversation it can see, and where that
        conversation ends for it: ``{conversation: (start, end)}``.

        The device's own claim wins over the server's cursor (it knows what it has); neither can
        reach before the user joined or past the end. Conversations the device is level with
        are listed too, so that the next live event is known to follow on, not taken for a gap.
        """
        async with self.db.read() as conn:
            rows = await store.cursor_rows(conn, user_id, device_id)
            positions = {}
            for r in rows:
                claim = claimed.get(r.conversation_id)
                start = claim if claim is not None else (r.cursor or 0)
                end = r.last_seq if r.left_seq is None else r.left_seq
                positions[r.conversation_id] = (min(max(start, r.joined_seq), end), end)
            return positions

    async def start_device(self, conn: AsyncConnection, user_id: str, device_id: str) -> None:
        """A new device starts at the present: its stream holds what is sent from now on, and
        older history is fetched page by page when wanted."""
        await store.cursors_at_present(conn, user_id, device_id)

    async def typing(self, ctx: AuthContext, conv_id: str, active: bool) -> None:
        key = (ctx.user_id, conv_id)
        now = self.clock.now_ms()
        last = self._typing.get(key)
        if last is not None:
            was, at = last
            if now - at < TYPING_MIN_MS or (
                was == active and (not active or now - at < TYPING_REPEAT_MS)
            ):
                return  # the others already show this
        async with self.db.read() as conn:
            roster = await store.roster(conn, conv_id, ctx.user_id)
            if not roster.me.current:
                raise Forbidden("not_a_member", "you are no longer a member of this conversation")
            recipients = roster.current
        event = {
            "type": "typing",
            "conversation_id": conv_id,
            "user_id": ctx.user_id,
            "username": ctx.username,
            "typing": active,
        }
        # Typing is not stored: there is no commit to wait for.
        await self.bus.publish([user_topic(u) for u in recipients if u != ctx.user_id], event)
        if len(self._typing) >= TYPING_REMEMBERED:  # forget what no longer holds anything back
            self._typing = {k: v for k, v in self._typing.items() if now - v[1] < TYPING_REPEAT_MS}
        self._typing[key] = (active, now)

    # ----- helpers ---------------------------------------------------------------------------

    async def _membership_event(
        self, conn: AsyncConnection, ctx: AuthContext, conv_id: str, seq: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        """A membership change as the timeline's event ``seq``: written by the server, in clear
        (who joined or left is not a secret from the server, which enforces it)."""
        return await store.insert_event(
            conn,
            self.clock.now_ms(),
            conv_id,
            seq,
            ctx,
            "membership",
            MEMBERSHIP_TYPE,
            _json(body),
            None,
        )

    def _publish(
        self,
        conn: AsyncConnection,
        user_ids: Iterable[str],
        event: dict[str, Any],
        *also: str,
    ) -> None:
        """To every device of these users (and to the topics in ``also``), once this
        transaction has committed."""
        self.db.publish_on_commit(conn, [*(user_topic(uid) for uid in user_ids), *also], event)

    @staticmethod
    def _require_admin_of_group(me: Membership, what: str = "change its members") -> None:
        if me.kind == "direct":
            fixed = "fixed members" if what == "change its members" else "no name or picture"
            raise Invalid("direct_conversation", f"a direct conversation has {fixed}")
        if not me.current:
            raise Forbidden("not_a_member", "you are no longer a member of this conversation")
        if me.role != "admin":
            raise Forbidden("not_admin", f"only a group admin can {what}")

    async def _keep_an_admin(self, conn: AsyncConnection, conv_id: str) -> None:
        """A group whose last admin left promotes its longest-standing member."""
        if await store.admin_count(conn, conv_id):
            return
        heir = await store.longest_standing(conn, conv_id)
        if heir is not None:
            await store.set_role(conn, conv_id, heir, "admin")

    async def _by_client_id(
        self,
        ctx: AuthContext,
        conv_id: str,
        client_msg_id: str,
        conn: AsyncConnection | None = None,
    ) -> dict[str, Any] | None:
        if conn is not None:
            return await store.by_client_id(conn, conv_id, ctx.device_id, client_msg_id)
        async with self.db.read() as fresh:
            return await store.by_client_id(fresh, conv_id, ctx.device_id, client_msg_id)

    async def _resolve(self, usernames: Sequence[str]) -> dict[str, str]:
        if not usernames:
            return {}
        async with self.db.read() as conn:
            found = await store.user_ids(conn, usernames)
        missing = [u for u in usernames if u not in found]
        if missing:
            raise NotFound("user_not_found", f"no such user: {', '.join(missing)}")
        return {u: found[u] for u in usernames}

    async def _direct(self, direct_key: str) -> str | None:
        async with self.db.read() as conn:
            return await store.direct_conversation(conn, direct_key)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
