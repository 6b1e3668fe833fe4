"""Every statement about calls; the rules that use them are in :mod:`.service`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.models import users
from secureconnect.video.models import call_declines, call_participants, calls
from secureconnect.video.schemas import CallOut, ParticipantOut


async def open_call(conn: AsyncConnection, conv_id: str) -> str | None:
    found = await conn.scalar(select(calls.c.id).where(calls.c.open_key == conv_id))
    return str(found) if found is not None else None


async def open_calls(conn: AsyncConnection, conv_ids: list[str]) -> list[str]:
    """The open calls of these conversations, oldest first; asked in slices, as someone in
    tens of thousands of conversations would pass the databases' limit on parameters."""
    found: list[tuple[int, str]] = []
    for i in range(0, len(conv_ids), 1000):
        # open_key is the conversation's id while its call is open, and unique (indexed).
        query = select(calls.c.id, calls.c.created_at).where(
            calls.c.open_key.in_(conv_ids[i : i + 1000])
        )
        found += [(r.created_at, str(r.id)) for r in (await conn.execute(query)).all()]
    return [call_id for _, call_id in sorted(found)]


async def insert_call(conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    await conn.execute(insert(calls).values(**row))


async def call_row(conn: AsyncConnection, call_id: str) -> Any:
    return (await conn.execute(select(calls).where(calls.c.id == call_id))).first()


async def owned_calls(conn: AsyncConnection, owner: str) -> list[Any]:
    query = select(calls).where(calls.c.owner == owner, calls.c.open_key.is_not(None))
    return list((await conn.execute(query)).all())


async def bump_version(conn: AsyncConnection, call_id: str) -> None:
    await conn.execute(
        update(calls).where(calls.c.id == call_id).values(version=calls.c.version + 1)
    )


async def set_call(conn: AsyncConnection, call_id: str, **values: Any) -> None:
    await conn.execute(update(calls).where(calls.c.id == call_id).values(**values))


async def claim(conn: AsyncConnection, call_id: str, was: str, owner: str, url: str) -> bool:
    """Takes an open call over from ``was`` (a replica gone, or "" once released): only one
    replica wins, whoever asks at once."""
    result = await conn.execute(
        update(calls)
        .where(calls.c.id == call_id, calls.c.owner == was, calls.c.open_key.is_not(None))
        .values(owner=owner, owner_url=url)
    )
    return bool(result.rowcount)


async def participant(conn: AsyncConnection, call_id: str, device_id: str) -> Any:
    query = select(call_participants).where(
        call_participants.c.call_id == call_id, call_participants.c.device_id == device_id
    )
    return (await conn.execute(query)).first()


async def seat(conn: AsyncConnection, row: Mapping[str, Any], rejoin: bool) -> None:
    """Puts a device in the call, or back in it (a rejoin keeps one row per device)."""
    if rejoin:
        await conn.execute(
            update(call_participants)
            .where(
                call_participants.c.call_id == row["call_id"],
                call_participants.c.device_id == row["device_id"],
            )
            .values(**row)
        )
    else:
        await conn.execute(insert(call_participants).values(**row))


async def set_participant(
    conn: AsyncConnection, call_id: str, device_ids: list[str], **values: Any
) -> None:
    await conn.execute(
        update(call_participants)
        .where(
            call_participants.c.call_id == call_id,
            call_participants.c.device_id.in_(device_ids),
        )
        .values(**values)
    )


async def set_heard(conn: AsyncConnection, heard: list[tuple[str, str, int]]) -> None:
    """(call, device, when) of heartbeats: one statement for all of them."""
    await conn.execute(
        update(call_participants)
        .where(
            call_participants.c.call_id == bindparam("c"),
            call_participants.c.device_id == bindparam("d"),
        )
        .values(heard_at=bindparam("t")),
        [{"c": c, "d": d, "t": t} for c, d, t in heard],
    )


async def silent(
    conn: AsyncConnection, call_ids: list[str], before_ms: int
) -> dict[str, list[str]]:
    """Per call, its devices not heard from since ``before_ms`` (calls with none are absent)."""
    if not call_ids:
        return {}
    query = select(call_participants.c.call_id, call_participants.c.device_id).where(
        call_participants.c.call_id.in_(call_ids),
        call_participants.c.left_at.is_(None),
        call_participants.c.heard_at < before_ms,
    )
    found: dict[str, list[str]] = {}
    for call_id, device_id in (await conn.execute(query)).all():
        found.setdefault(str(call_id), []).append(str(device_id))
    return found


async def present(conn: AsyncConnection, call_id: str) -> list[str]:
    """The devices in the call now."""
    query = select(call_participants.c.device_id).where(
        call_participants.c.call_id == call_id, call_participants.c.left_at.is_(None)
    )
    return [str(d) for d in (await conn.scalars(query)).all()]


async def decline(conn: AsyncConnection, call_id: str, user_id: str, at: int) -> None:
    exists = await conn.scalar(
        select(call_declines.c.at).where(
            call_declines.c.call_id == call_id, call_declines.c.user_id == user_id
        )
    )
    if exists is None:
        await conn.execute(insert(call_declines).values(call_id=call_id, user_id=user_id, at=at))


async def declined_ids(conn: AsyncConnection, call_id: str) -> list[str]:
    query = select(call_declines.c.user_id).where(call_declines.c.call_id == call_id)
    return [str(u) for u in (await conn.scalars(query)).all()]


async def ever_joined(conn: AsyncConnection, call_id: str) -> list[str]:
    """The usernames of everyone who was in the call, in the order they first came."""
    rows = (
        await conn.execute(
            select(users.c.username, call_participants.c.joined_at)
            .select_from(call_participants.join(users, users.c.id == call_participants.c.user_id))
            .where(call_participants.c.call_id == call_id)
            .order_by(call_participants.c.joined_at)
        )
    ).all()
    seen: list[str] = []
    for r in rows:
        if r.username not in seen:
            seen.append(r.username)
    return seen


async def describe(conn: AsyncConnection, call_id: str, ring_ms: int = 0) -> CallOut | None:
    row = await call_row(conn, call_id)
    if row is None:
        return None
    caller = await conn.scalar(select(users.c.username).where(users.c.id == row.caller_user_id))
    present = (
        await conn.execute(
            select(call_participants, users.c.username)
            .select_from(call_participants.join(users, users.c.id == call_participants.c.user_id))
            .where(call_participants.c.call_id == call_id, call_participants.c.left_at.is_(None))
            .order_by(call_participants.c.joined_at)
        )
    ).all()
    declined = (
        await conn.execute(
            select(users.c.username)
            .select_from(call_declines.join(users, users.c.id == call_declines.c.user_id))
            .where(call_declines.c.call_id == call_id)
            .order_by(call_declines.c.at)
        )
    ).all()
    return CallOut(
        id=row.id,
        conversation_id=row.conversation_id,
        media=row.media,
        state=row.state,
        outcome=row.outcome,
        caller=str(caller),
        created_at=row.created_at,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
        rings_until=row.created_at + ring_ms if row.open_key is not None else None,
        sfu_epoch=row.sfu_epoch,
        version=row.version,
        participants=[
            ParticipantOut(
                device_id=p.device_id,
                user_id=p.user_id,
                username=p.username,
                feed_id=p.feed_id,
                publishing=p.publishing,
                audio=p.audio,
                video=p.video,
                screen=p.screen,
                joined_at=p.joined_at,
            )
            for p in present
        ],
        declined=[d.username for d in declined],
    )
