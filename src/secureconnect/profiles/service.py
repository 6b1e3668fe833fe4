"""Display names and pictures: who may set them, who may see them, and the timeline events
that tell a conversation about a change.

Rules:
- a person sets their own; a group's name and picture are set by its admins;
- a person's profile is shown to themselves and to those who share a conversation with them
  now (as the key directory is); to anyone else they are an unknown name (404);
- a group's picture is shown to its members, current and former (who keep what they saw);
- every change is an event in each conversation concerned ("alice changed their name to ..."),
  as Element shows it, so that every device learns of it in order, and nobody is renamed
  silently.
"""

from __future__ import annotations

import asyncio
import unicodedata

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.service import AuthContext, normalise_username
from secureconnect.chat import store as chat_store
from secureconnect.chat.service import ChatService
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Invalid, NotFound
from secureconnect.profiles import images
from secureconnect.profiles.models import avatars, profiles
from secureconnect.profiles.schemas import ProfileOut
from secureconnect.store import Database
from secureconnect.store.sql import put

NOBODY = ("user_not_found", "no such user")
NO_PICTURE = ("avatar_not_found", "no picture")


def clean_name(raw: str | None) -> str | None:
    """A display name fit to show: spaces collapsed, no control or direction characters."""
    if raw is None:
        return None
    kept = "".join(
        ch for ch in raw if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    )
    name = " ".join(kept.split())
    return name or None


class ProfileService:
    def __init__(self, db: Database, chat: ChatService, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.chat = chat
        self.clock = clock

    # ----- people ----------------------------------------------------------------------------

    async def mine(self, ctx: AuthContext) -> ProfileOut:
        async with self.db.read() as conn:
            return await _profile(conn, ctx.user_id, ctx.username)

    async def set_name(self, ctx: AuthContext, raw: str | None) -> ProfileOut:
        name = clean_name(raw)
        async with self.db.write() as conn:
            before = await _profile(conn, ctx.user_id, ctx.username)
            if before.display_name == name:
                return before
            await self._save(conn, ctx.user_id, name, before.avatar)
            await self._tell_everyone(
                conn, ctx, {"action": "profile", "actor": ctx.username, "display_name": name}
            )
        return ProfileOut(username=ctx.username, display_name=name, avatar=before.avatar)

    async def set_picture(self, ctx: AuthContext, data: bytes | None) -> ProfileOut:
        """A new picture (``None``: none)."""
        made = await asyncio.to_thread(images.normalise, data) if data is not None else None
        async with self.db.write() as conn:
            before = await _profile(conn, ctx.user_id, ctx.username)
            tag = await _store_picture(conn, f"u:{ctx.user_id}", made)
            if tag != before.avatar:
                await self._save(conn, ctx.user_id, before.display_name, tag)
                await self._tell_everyone(
                    conn, ctx, {"action": "avatar", "actor": ctx.username, "removed": tag is None}
                )
        return ProfileOut(username=ctx.username, display_name=before.display_name, avatar=tag)

    async def read(self, ctx: AuthContext, usernames: list[str]) -> list[ProfileOut]:
        """The profiles of those the caller may see, in the order asked; others are left out."""
        wanted = list(dict.fromkeys(normalise_username(u) for u in usernames))
        out = []
        async with self.db.read() as conn:
            found = await chat_store.user_ids(conn, wanted)
            for name in wanted:
                uid = found.get(name)
                if uid is not None and await self._visible(conn, ctx, uid):
                    out.append(await _profile(conn, uid, name))
        return out

    async def picture(self, ctx: AuthContext, username: str, size: int) -> tuple[bytes, str]:
        name = normalise_username(username)
        async with self.db.read() as conn:
            uid = (await chat_store.user_ids(conn, [name])).get(name)
            if uid is None or not await self._visible(conn, ctx, uid):
                raise NotFound(*NOBODY)
            return await _picture(conn, f"u:{uid}", size)

    # ----- groups ----------------------------------------------------------------------------

    async def set_group_picture(
        self, ctx: AuthContext, conv_id: str, data: bytes | None
    ) -> str | None:
        made = await asyncio.to_thread(images.normalise, data) if data is not None else None
        async with self.db.write() as conn:
            body = {"action": "group_avatar", "actor": ctx.username, "removed": made is None}
            await self.chat.announce(conn, ctx, conv_id, body, admin=True)
            tag = await _store_picture(conn, f"c:{conv_id}", made)
            await chat_store.set_avatar(conn, conv_id, tag)
        return tag

    async def group_picture(self, ctx: AuthContext, conv_id: str, size: int) -> tuple[bytes, str]:
        async with self.db.read() as conn:
            await chat_store.roster(conn, conv_id, ctx.user_id)  # ever a member, or 404
            return await _picture(conn, f"c:{conv_id}", size)

    # ----- helpers ---------------------------------------------------------------------------

    async def _visible(self, conn: AsyncConnection, ctx: AuthContext, uid: str) -> bool:
        return uid == ctx.user_id or await chat_store.shares_a_conversation(conn, ctx.user_id, uid)

    async def _save(
        self, conn: AsyncConnection, user_id: str, name: str | None, tag: str | None
    ) -> None:
        values = {
            "user_id": user_id,
            "display_name": name,
            "avatar": tag,
            "updated_at": self.clock.now_ms(),
        }
        await put(conn, profiles, values, ["user_id"])

    async def _tell_everyone(
        self, conn: AsyncConnection, ctx: AuthContext, body: dict[str, object]
    ) -> None:
        for conv_id in await self.chat.current_conversations(conn, ctx.user_id):
            await self.chat.announce(conn, ctx, conv_id, dict(body))


async def _profile(conn: AsyncConnection, uid: str, username: str) -> ProfileOut:
    row = (
        await conn.execute(
            select(profiles.c.display_name, profiles.c.avatar).where(profiles.c.user_id == uid)
        )
    ).first()
    if row is None:
        return ProfileOut(username=username, display_name=None, avatar=None)
    return ProfileOut(username=username, display_name=row.display_name, avatar=row.avatar)


async def _store_picture(
    conn: AsyncConnection, owner: str, made: tuple[str, dict[int, bytes]] | None
) -> str | None:
    await conn.execute(delete(avatars).where(avatars.c.owner == owner))
    if made is None:
        return None
    tag, sized = made
    await conn.execute(
        avatars.insert(),
        [
            {"owner": owner, "size": size, "image": image, "tag": tag}
            for size, image in sized.items()
        ],
    )
    return tag


async def _picture(conn: AsyncConnection, owner: str, size: int) -> tuple[bytes, str]:
    if size not in images.SIZES:
        raise Invalid("bad_size", f"size is one of {', '.join(map(str, images.SIZES))}")
    row = (
        await conn.execute(
            select(avatars.c.image, avatars.c.tag).where(
                avatars.c.owner == owner, avatars.c.size == size
            )
        )
    ).first()
    if row is None:
        raise NotFound(*NO_PICTURE)
    return bytes(row.image), row.tag
