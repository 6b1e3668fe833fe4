"""The chat queries: every statement the chat rules in :mod:`secureconnect.chat.service` share.

Nothing here decides who may do what or what happens next; each function reads or writes rows
on the connection it is given, inside the caller's transaction. (Statements used by one rule
alone still sit beside it in the service.)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import and_, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from secureconnect.accounts.models import users
from secureconnect.accounts.service import AuthContext
from secureconnect.chat.models import (
    conversations,
    device_cursors,
    events,
    members,
    receipts,
    user_blocks,
)
from secureconnect.errors import NotFound
from secureconnect.store.sql import put, upsert_many

# Result rows, read by column name (``row.seq``).
Rows: TypeAlias = Sequence[Row[*tuple[Any, ...]]]


@dataclass(frozen=True)
class Membership:
    conversation_id: str
    kind: str
    role: str
    joined_seq: int
    left_seq: int | None
    last_seq: int
    requested_by: str | None = None  # a message request not yet accepted (its requester)

    @property
    def current(self) -> bool:
        return self.left_seq is None

    @property
    def visible_until(self) -> int:
        return self.last_seq if self.left_seq is None else self.left_seq


@dataclass(frozen=True)
class Roster:
    """A caller's membership plus every member row (current and former) of the conversation."""

    me: Membership
    rows: dict[str, tuple[str, int, int | None]]  # user id -> (role, joined_seq, left_seq)

    @property
    def current(self) -> list[str]:
        return [uid for uid, (_, _, left) in self.rows.items() if left is None]


def event_out(r: Mapping[Any, Any]) -> dict[str, Any]:
    """The wire form of a timeline event, the same over HTTP history and the WebSocket."""
    return {
        "type": "message",
        "conversation_id": r["conversation_id"],
        "seq": r["seq"],
        "kind": r["kind"],
        "sender_id": r["sender_user_id"],
        "sender": r["sender_username"],
        "sender_device_id": r["sender_device_id"],
        "client_msg_id": r["client_msg_id"],
        "content_type": r["content_type"],
        "body": base64.b64encode(r["body"]).decode(),
        "created_at": r["created_at"],
    }


_EVENT_COLUMNS = (
    events.c.conversation_id,
    events.c.seq,
    events.c.kind,
    events.c.sender_user_id,
    events.c.sender_device_id,
    events.c.client_msg_id,
    events.c.content_type,
    events.c.body,
    events.c.created_at,
    users.c.username.label("sender_username"),
)


async def roster(
    conn: AsyncConnection, conv_id: str, user_id: str, *, lock: bool = False
) -> Roster:
    """The caller's membership and every member row, in one query (each round trip to the
    database costs more than the query itself). A conversation the caller was never in does
    not exist for them. With ``lock``, writers to this conversation queue behind this one:
    that is what makes sequence numbers gap-free and commit in order."""
    query = (
        select(
            conversations.c.kind,
            conversations.c.last_seq,
            members.c.user_id,
            members.c.role,
            members.c.joined_seq,
            members.c.left_seq,
            members.c.requested_by,
        )
        .join(members, members.c.conversation_id == conversations.c.id)
        .where(conversations.c.id == conv_id)
    )
    if lock:
        # PostgreSQL locks the conversation row; SQLite has one writer at a time anyway.
        query = query.with_for_update(of=conversations)
    rows = (await conn.execute(query)).all()
    mine = next((r for r in rows if r.user_id == user_id), None)
    if mine is None:
        raise NotFound("conversation_not_found", "no such conversation")
    me = Membership(
        conv_id,
        mine.kind,
        mine.role,
        mine.joined_seq,
        mine.left_seq,
        mine.last_seq,
        mine.requested_by,
    )
    return Roster(me, {r.user_id: (r.role, r.joined_seq, r.left_seq) for r in rows})


async def membership_left(
    conn: AsyncConnection, conv_id: str, user_id: str
) -> tuple[bool, int | None]:
    """(was ever a member, ``left_seq``): the one member row, for checks made per request."""
    row = (
        await conn.execute(
            select(members.c.left_seq).where(
                members.c.conversation_id == conv_id, members.c.user_id == user_id
            )
        )
    ).first()
    return (row is not None, row.left_seq if row is not None else None)


async def still_members(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (conversation, user) pairs are current members: one statement for all of them."""
    if not pairs:
        return set()
    query = select(members.c.conversation_id, members.c.user_id).where(
        tuple_(members.c.conversation_id, members.c.user_id).in_(list(pairs)),
        members.c.left_seq.is_(None),
    )
    return {(str(c), str(u)) for c, u in (await conn.execute(query)).all()}


async def bump(conn: AsyncConnection, conv_id: str, seq: int) -> None:
    await conn.execute(
        update(conversations).where(conversations.c.id == conv_id).values(last_seq=seq)
    )


async def insert_event(
    conn: AsyncConnection,
    now: int,
    conv_id: str,
    seq: int,
    ctx: AuthContext,
    kind: str,
    content_type: str,
    body: bytes,
    client_msg_id: str | None,
) -> dict[str, Any]:
    row = {
        "conversation_id": conv_id,
        "seq": seq,
        "kind": kind,
        "sender_user_id": ctx.user_id,
        "sender_device_id": ctx.device_id,
        "client_msg_id": client_msg_id,
        "content_type": content_type,
        "body": body,
        "created_at": now,
    }
    await conn.execute(insert(events).values(**row))
    return event_out({**row, "sender_username": ctx.username})


async def events_between(
    conn: AsyncConnection,
    conv_id: str,
    lo: int,
    hi: int,
    limit: int,
    *,
    newest: bool = False,
) -> list[dict[str, Any]]:
    """Events with ``lo < seq <= hi``: the oldest ``limit`` of them, or the newest."""
    order = events.c.seq.desc() if newest else events.c.seq
    rows = await conn.execute(
        select(*_EVENT_COLUMNS)
        .join(users, users.c.id == events.c.sender_user_id)
        .where(and_(events.c.conversation_id == conv_id, events.c.seq > lo, events.c.seq <= hi))
        .order_by(order)
        .limit(limit)
    )
    return [event_out(r._mapping) for r in rows]


async def receipt(
    conn: AsyncConnection, conv_id: str, user_id: str, username: str
) -> dict[str, Any]:
    row = (
        await conn.execute(
            select(receipts.c.delivered_seq, receipts.c.read_seq).where(
                and_(receipts.c.conversation_id == conv_id, receipts.c.user_id == user_id)
            )
        )
    ).first()
    return {
        "conversation_id": conv_id,
        "user_id": user_id,
        "username": username,
        "delivered_seq": row.delivered_seq if row else 0,
        "read_seq": row.read_seq if row else 0,
    }


async def sender_spans(
    conn: AsyncConnection, conv_id: str, low: int, high: int
) -> dict[str, tuple[int, int]]:
    """Who sent messages in ``low < seq <= high``: their first and last seq in that range.
    One row per sender, however many messages the range holds."""
    if high <= low:
        return {}
    rows = await conn.execute(
        select(events.c.sender_user_id, func.min(events.c.seq), func.max(events.c.seq))
        .where(
            and_(
                events.c.conversation_id == conv_id,
                events.c.seq > low,
                events.c.seq <= high,
                events.c.kind == "message",
            )
        )
        .group_by(events.c.sender_user_id)
    )
    return {sender: (first, last) for sender, first, last in rows}


async def unread(conn: AsyncConnection, user_id: str, conv_ids: list[str]) -> dict[str, int]:
    read_seq = (
        select(receipts.c.read_seq)
        .where(
            and_(
                receipts.c.conversation_id == events.c.conversation_id,
                receipts.c.user_id == user_id,
            )
        )
        .scalar_subquery()
    )
    rows = await conn.execute(
        select(events.c.conversation_id, func.count())
        .join(
            members,
            and_(
                members.c.conversation_id == events.c.conversation_id,
                members.c.user_id == user_id,
            ),
        )
        .where(
            and_(
                events.c.conversation_id.in_(conv_ids),
                events.c.kind == "message",
                events.c.sender_user_id != user_id,
                events.c.seq > members.c.joined_seq,
                or_(members.c.left_seq.is_(None), events.c.seq <= members.c.left_seq),
                events.c.seq > func.coalesce(read_seq, literal(0)),
            )
        )
        .group_by(events.c.conversation_id)
    )
    return {r[0]: r[1] for r in rows}


async def current_usernames(conn: AsyncConnection, conv_ids: list[str]) -> dict[str, list[str]]:
    """Each conversation's current members' usernames, sorted."""
    rows = await conn.execute(
        select(members.c.conversation_id, users.c.username)
        .join(users, users.c.id == members.c.user_id)
        .where(and_(members.c.conversation_id.in_(conv_ids), members.c.left_seq.is_(None)))
        .order_by(users.c.username)
    )
    roster: dict[str, list[str]] = {}
    for conv_id, username in rows:
        roster.setdefault(conv_id, []).append(username)
    return roster


async def by_client_id(
    conn: AsyncConnection, conv_id: str, device_id: str, client_msg_id: str
) -> dict[str, Any] | None:
    """The event a device sent with this client message id, if it is stored."""
    row = (
        await conn.execute(
            select(*_EVENT_COLUMNS)
            .join(users, users.c.id == events.c.sender_user_id)
            .where(
                and_(
                    events.c.conversation_id == conv_id,
                    events.c.sender_device_id == device_id,
                    events.c.client_msg_id == client_msg_id,
                )
            )
        )
    ).first()
    return event_out(row._mapping) if row is not None else None


async def conversation_kind(conn: AsyncConnection, conv_id: str) -> str | None:
    kind = await conn.scalar(select(conversations.c.kind).where(conversations.c.id == conv_id))
    return str(kind) if kind is not None else None


async def username_of(conn: AsyncConnection, user_id: str) -> str:
    return str(await conn.scalar(select(users.c.username).where(users.c.id == user_id)))


async def user_ids(conn: AsyncConnection, usernames: Sequence[str]) -> dict[str, str]:
    """username -> user id, for those that exist."""
    rows = await conn.execute(
        select(users.c.username, users.c.id).where(users.c.username.in_(usernames))
    )
    return {r.username: r.id for r in rows}


async def direct_conversation(conn: AsyncConnection, direct_key: str) -> str | None:
    found: str | None = (
        await conn.execute(
            select(conversations.c.id).where(conversations.c.direct_key == direct_key)
        )
    ).scalar()
    return found


async def insert_conversation(
    conn: AsyncConnection,
    conv_id: str,
    kind: str,
    name: str | None,
    direct_key: str | None,
    created_by: str,
    now: int,
) -> None:
    """A conversation whose timeline starts with its creation event (seq 1)."""
    await conn.execute(
        insert(conversations).values(
            id=conv_id,
            kind=kind,
            name=name,
            direct_key=direct_key,
            created_by=created_by,
            created_at=now,
            last_seq=1,
        )
    )


async def join(
    conn: AsyncConnection,
    conv_id: str,
    user_id: str,
    role: str,
    *,
    joined_seq: int,
    rejoin: bool,
    requested_by: str | None = None,
) -> None:
    """A member row (``rejoin``: the user was a member before and has a row already);
    ``requested_by``: a message request from that user, until the member accepts it."""
    values = {"role": role, "joined_seq": joined_seq, "requested_by": requested_by}
    if rejoin:
        await conn.execute(
            update(members)
            .where(and_(members.c.conversation_id == conv_id, members.c.user_id == user_id))
            .values(**values, left_seq=None)
        )
    else:
        await conn.execute(
            insert(members).values(conversation_id=conv_id, user_id=user_id, **values)
        )


async def accept_request(conn: AsyncConnection, conv_id: str, user_id: str) -> None:
    await conn.execute(
        update(members)
        .where(
            and_(
                members.c.conversation_id == conv_id,
                members.c.user_id == user_id,
                members.c.requested_by.is_not(None),
            )
        )
        .values(requested_by=None)
    )


async def contacts_among(conn: AsyncConnection, user_id: str, others: Sequence[str]) -> set[str]:
    """Those of ``others`` in contact with ``user_id``: both in one conversation, each of them
    having accepted it (a request nobody answered is no contact)."""
    if not others:
        return set()
    mine, theirs = members.alias("mine"), members.alias("theirs")
    rows = await conn.execute(
        select(theirs.c.user_id)
        .distinct()
        .join(mine, mine.c.conversation_id == theirs.c.conversation_id)
        .where(
            mine.c.user_id == user_id,
            mine.c.requested_by.is_(None),
            theirs.c.user_id.in_(others),
            theirs.c.requested_by.is_(None),
        )
    )
    return {r.user_id for r in rows}


async def shares_a_conversation(conn: AsyncConnection, user_id: str, other: str) -> bool:
    """Both are members of one conversation now (a request included), as the inbox requires:
    what the key directory asks. Someone who declined or left is nobody's to look up."""
    mine, theirs = members.alias("mine"), members.alias("theirs")
    found = await conn.scalar(
        select(literal(1))
        .select_from(theirs.join(mine, mine.c.conversation_id == theirs.c.conversation_id))
        .where(
            mine.c.user_id == user_id,
            mine.c.left_seq.is_(None),
            theirs.c.user_id == other,
            theirs.c.left_seq.is_(None),
        )
        .limit(1)
    )
    return found is not None


async def blocking(conn: AsyncConnection, blocked: str, blockers: Sequence[str]) -> set[str]:
    """Those of ``blockers`` who have blocked ``blocked``."""
    if not blockers:
        return set()
    rows = await conn.execute(
        select(user_blocks.c.blocker_id).where(
            user_blocks.c.blocked_id == blocked, user_blocks.c.blocker_id.in_(blockers)
        )
    )
    return {r.blocker_id for r in rows}


async def block(conn: AsyncConnection, blocker: str, blocked: str, at: int) -> None:
    await put(
        conn,
        user_blocks,
        {"blocker_id": blocker, "blocked_id": blocked, "at": at},
        [
            "blocker_id",
            "blocked_id",
        ],
    )


async def unblock(conn: AsyncConnection, blocker: str, blocked: str) -> int:
    result = await conn.execute(
        user_blocks.delete().where(
            user_blocks.c.blocker_id == blocker, user_blocks.c.blocked_id == blocked
        )
    )
    return int(result.rowcount or 0)


async def blocked_usernames(conn: AsyncConnection, blocker: str) -> list[str]:
    rows = await conn.execute(
        select(users.c.username)
        .join(user_blocks, user_blocks.c.blocked_id == users.c.id)
        .where(user_blocks.c.blocker_id == blocker)
        .order_by(users.c.username)
    )
    return [r.username for r in rows]


async def leave(conn: AsyncConnection, conv_id: str, user_id: str, left_seq: int) -> None:
    await conn.execute(
        update(members)
        .where(and_(members.c.conversation_id == conv_id, members.c.user_id == user_id))
        .values(left_seq=left_seq)
    )


async def conversation_rows(conn: AsyncConnection, user_id: str, only: str | None) -> Rows:
    """The user's membership rows (current and former), with their read and delivered marks
    and, for a message request, who asked."""
    requester = users.alias("requester")
    last = events.alias("last_event")
    seen_until = func.coalesce(members.c.left_seq, conversations.c.last_seq)
    query = (
        select(
            conversations.c.id,
            conversations.c.kind,
            conversations.c.name,
            conversations.c.avatar,
            conversations.c.created_at,
            conversations.c.last_seq,
            # When it last saw activity (for a former member, up to when they left): one row
            # by primary key.
            func.coalesce(last.c.created_at, conversations.c.created_at).label("last_at"),
            members.c.role,
            members.c.joined_seq,
            members.c.left_seq,
            requester.c.username.label("requested_by"),
            func.coalesce(receipts.c.read_seq, 0).label("read_seq"),
            func.coalesce(receipts.c.delivered_seq, 0).label("delivered_seq"),
        )
        .join(members, members.c.conversation_id == conversations.c.id)
        .outerjoin(
            last, and_(last.c.conversation_id == conversations.c.id, last.c.seq == seen_until)
        )
        .outerjoin(requester, requester.c.id == members.c.requested_by)
        .outerjoin(
            receipts,
            and_(
                receipts.c.conversation_id == conversations.c.id,
                receipts.c.user_id == user_id,
            ),
        )
        .where(members.c.user_id == user_id)
    )
    if only is not None:
        query = query.where(conversations.c.id == only)
    return (await conn.execute(query)).all()


async def set_name(conn: AsyncConnection, conv_id: str, name: str) -> None:
    await conn.execute(update(conversations).where(conversations.c.id == conv_id).values(name=name))


async def set_avatar(conn: AsyncConnection, conv_id: str, tag: str | None) -> None:
    await conn.execute(
        update(conversations).where(conversations.c.id == conv_id).values(avatar=tag)
    )


async def current_conversation_ids(
    conn: AsyncConnection, user_id: str, *, requests: bool = True
) -> list[str]:
    where = [members.c.user_id == user_id, members.c.left_seq.is_(None)]
    if not requests:
        where.append(members.c.requested_by.is_(None))
    rows = await conn.execute(
        select(members.c.conversation_id)
        .where(*where)
        .order_by(members.c.joined_seq, members.c.conversation_id)
    )
    return [r.conversation_id for r in rows]


async def current_members(conn: AsyncConnection, conv_id: str, *, requests: bool = True) -> Rows:
    """Current members, longest-standing first: (id, username, role, joined_seq); without
    ``requests``, only those who accepted (a pending message request left out)."""
    where = [members.c.conversation_id == conv_id, members.c.left_seq.is_(None)]
    if not requests:
        where.append(members.c.requested_by.is_(None))
    rows = await conn.execute(
        select(users.c.id, users.c.username, members.c.role, members.c.joined_seq)
        .join(users, users.c.id == members.c.user_id)
        .where(and_(*where))
        .order_by(members.c.joined_seq, users.c.username)
    )
    return rows.all()


async def receipt_marks(conn: AsyncConnection, conv_id: str) -> Rows:
    """Every member's marks in a conversation, by username."""
    rows = await conn.execute(
        select(
            receipts.c.conversation_id,
            receipts.c.user_id,
            users.c.username,
            receipts.c.delivered_seq,
            receipts.c.read_seq,
        )
        .join(users, users.c.id == receipts.c.user_id)
        .where(receipts.c.conversation_id == conv_id)
        .order_by(users.c.username)
    )
    return rows.all()


async def raise_receipts(conn: AsyncConnection, marks: Sequence[tuple[str, str, int, int]]) -> None:
    """(conversation, user, delivered, read) marks; each moves forward only, never back. In key
    order, so that two replicas' batches lock rows in the same order."""
    await upsert_many(
        conn,
        receipts,
        [
            {"conversation_id": c, "user_id": u, "delivered_seq": d, "read_seq": r}
            for c, u, d, r in sorted(marks)
        ],
        keys=["conversation_id", "user_id"],
        keep_max=["delivered_seq", "read_seq"],
    )


async def raise_cursors(conn: AsyncConnection, cursors: Mapping[tuple[str, str], int]) -> None:
    """{(device, conversation): seq}: how far each device has received; forward only."""
    await upsert_many(
        conn,
        device_cursors,
        [
            {"device_id": d, "conversation_id": c, "seq": seq}
            for (d, c), seq in sorted(cursors.items())
        ],
        keys=["device_id", "conversation_id"],
        keep_max=["seq"],
    )


async def positions(
    conn: AsyncConnection, conv_ids: Sequence[str], user_ids: Sequence[str]
) -> Rows:
    """For each (conversation, user) pair that is a membership: where the user's visible
    timeline ends and their delivered/read marks."""
    rows = await conn.execute(
        select(
            members.c.conversation_id,
            members.c.user_id,
            members.c.left_seq,
            conversations.c.last_seq,
            func.coalesce(receipts.c.delivered_seq, 0).label("delivered_seq"),
            func.coalesce(receipts.c.read_seq, 0).label("read_seq"),
        )
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .outerjoin(
            receipts,
            and_(
                receipts.c.conversation_id == members.c.conversation_id,
                receipts.c.user_id == members.c.user_id,
            ),
        )
        .where(and_(members.c.conversation_id.in_(conv_ids), members.c.user_id.in_(user_ids)))
    )
    return rows.all()


async def cursor_rows(conn: AsyncConnection, user_id: str, device_id: str) -> Rows:
    """Each conversation the user was ever in: their bounds and this device's cursor."""
    rows = await conn.execute(
        select(
            members.c.conversation_id,
            members.c.joined_seq,
            members.c.left_seq,
            conversations.c.last_seq,
            device_cursors.c.seq.label("cursor"),
        )
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .outerjoin(
            device_cursors,
            and_(
                device_cursors.c.conversation_id == members.c.conversation_id,
                device_cursors.c.device_id == device_id,
            ),
        )
        .where(members.c.user_id == user_id)
    )
    return rows.all()


async def cursors_at_present(conn: AsyncConnection, user_id: str, device_id: str) -> None:
    """The device's cursor in each current conversation at its last event."""
    rows = await conn.execute(
        select(members.c.conversation_id, conversations.c.last_seq)
        .join(conversations, conversations.c.id == members.c.conversation_id)
        .where(and_(members.c.user_id == user_id, members.c.left_seq.is_(None)))
    )
    for r in rows:
        await conn.execute(
            insert(device_cursors).values(
                device_id=device_id, conversation_id=r.conversation_id, seq=r.last_seq
            )
        )


def _current(conv_id: str) -> ColumnElement[bool]:
    return and_(members.c.conversation_id == conv_id, members.c.left_seq.is_(None))


async def admin_count(conn: AsyncConnection, conv_id: str) -> int:
    count: int = (
        await conn.execute(
            select(func.count())
            .select_from(members)
            .where(and_(_current(conv_id), members.c.role == "admin"))
        )
    ).scalar_one()
    return count


async def longest_standing(conn: AsyncConnection, conv_id: str) -> str | None:
    """The current member who joined first (ties broken by id, so every replica agrees)."""
    heir: str | None = (
        await conn.execute(
            select(members.c.user_id)
            .where(_current(conv_id))
            .order_by(members.c.joined_seq, members.c.user_id)
            .limit(1)
        )
    ).scalar()
    return heir


async def set_role(conn: AsyncConnection, conv_id: str, user_id: str, role: str) -> None:
    await conn.execute(
        update(members)
        .where(and_(members.c.conversation_id == conv_id, members.c.user_id == user_id))
        .values(role=role)
    )
