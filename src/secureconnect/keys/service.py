"""Key directory and inbox logic.

The directory hands out what X3DH needs: a device's identity and signing keys, its signed prekey,
and one one-time prekey, which is deleted in the same statement that reads it so that no key is
ever given to two people. Signatures are checked on upload, so a client that fetches a bundle can
rely on the directory not holding garbage (it still verifies them itself).

The inbox keeps pairwise-encrypted messages for one device until that device acknowledges them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.accounts.models import devices, users
from secureconnect.accounts.service import AuthContext, normalise_username
from secureconnect.bus import user_topic
from secureconnect.chat.models import members
from secureconnect.chat.store import shares_a_conversation
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.crypto.primitives import CryptoError, b64, verify
from secureconnect.crypto.x3dh import identity_payload, spk_payload
from secureconnect.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from secureconnect.keys.models import device_keys, inbox, one_time_prekeys, prekey_claims
from secureconnect.store import Database
from secureconnect.store.sql import bump, upsert

MAX_PREKEYS_PER_UPLOAD = 100
MAX_PREKEY_STOCK = 500
LOW_PREKEYS = 10
# One-time prekeys one user may take from one device in an hour. A real contact needs one per
# session (a new session is rare: a reinstall, a lost state); the rest get the signed prekey.
PREKEYS_PER_CLAIMER_HOUR = 3
# And one device hands out at most this many in an hour, whoever asks: many accounts acting
# together cannot empty it faster than its owner's refill (decision 0017).
PREKEYS_PER_DEVICE_HOUR = 100
HOUR_MS = 3_600_000
MAX_INBOX_BODY = 64 * 1024
MAX_INBOX_BATCH = 500


def _check_signature(signing_key: bytes, payload: bytes, signature: bytes, what: str) -> None:
    try:
        verify(signing_key, payload, signature)
    except CryptoError as error:
        raise Invalid("bad_signature", f"the {what} signature does not verify") from error


def _check_key(value: bytes, what: str) -> None:
    if len(value) != 32:
        raise Invalid("bad_key", f"{what} must be 32 bytes")


class KeyService:
    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def publish(
        self,
        ctx: AuthContext,
        identity_key: bytes,
        signing_key: bytes,
        identity_sig: bytes,
        spk_id: int,
        spk: bytes,
        spk_sig: bytes,
    ) -> None:
        """Publishes this device's keys. A device's identity never changes: a new identity is a
        new device, so that contacts see it as one."""
        for value, what in (
            (identity_key, "identity_key"),
            (signing_key, "signing_key"),
            (spk, "signed prekey"),
        ):
            _check_key(value, what)
        _check_signature(signing_key, identity_payload(identity_key), identity_sig, "identity")
        _check_signature(signing_key, spk_payload(spk_id, spk), spk_sig, "signed prekey")
        async with self.db.write() as conn:
            current = (
                await conn.execute(
                    select(device_keys.c.identity_key, device_keys.c.signing_key).where(
                        device_keys.c.device_id == ctx.device_id
                    )
                )
            ).first()
            if current is not None and (current.identity_key, current.signing_key) != (
                identity_key,
                signing_key,
            ):
                raise Conflict(
                    "identity_immutable",
                    "this device already has other identity keys; log in as a new "
                    "device to use new ones",
                )
            values = {
                "device_id": ctx.device_id,
                "user_id": ctx.user_id,
                "identity_key": identity_key,
                "signing_key": signing_key,
                "identity_sig": identity_sig,
                "spk_id": spk_id,
                "spk": spk,
                "spk_sig": spk_sig,
                "updated_at": self.clock.now_ms(),
            }
            if current is None:
                await conn.execute(insert(device_keys).values(**values))
            else:
                await conn.execute(
                    update(device_keys)
                    .where(device_keys.c.device_id == ctx.device_id)
                    .values(
                        spk_id=spk_id, spk=spk, spk_sig=spk_sig, updated_at=values["updated_at"]
                    )
                )

    async def upload_prekeys(self, ctx: AuthContext, keys: list[tuple[int, bytes]]) -> int:
        if len(keys) > MAX_PREKEYS_PER_UPLOAD:
            raise TooLarge(
                "too_many_prekeys", f"upload at most {MAX_PREKEYS_PER_UPLOAD} prekeys at a time"
            )
        for _, key in keys:
            _check_key(key, "one-time prekey")
        async with self.db.write() as conn:
            await self._require_published(conn, ctx.device_id)
            stock = await self._stock(conn, ctx.device_id)
            if stock + len(keys) > MAX_PREKEY_STOCK:
                raise Invalid(
                    "prekey_stock_full",
                    f"at most {MAX_PREKEY_STOCK} one-time prekeys may wait unused",
                )
            for key_id, key in keys:
                await upsert(
                    conn,
                    one_time_prekeys,
                    {"device_id": ctx.device_id, "key_id": key_id, "public_key": key},
                    keys=["device_id", "key_id"],
                )
            return await self._stock(conn, ctx.device_id)

    async def stock(self, ctx: AuthContext) -> int:
        async with self.db.read() as conn:
            return await self._stock(conn, ctx.device_id)

    async def user_devices(self, ctx: AuthContext, username: str) -> list[dict[str, Any]]:
        """A person's devices and keys, for the caller and the people they share a conversation
        with (a request included); anyone else is answered as an unknown name is, so that the
        directory does not tell a stranger who has an account."""
        name = normalise_username(username)
        async with self.db.read() as conn:
            user_id = (
                await conn.execute(select(users.c.id).where(users.c.username == name))
            ).scalar()
            if user_id is None or not await _may_see(conn, ctx, user_id):
                raise NotFound("user_not_found", f"no such user: {name}")
            return await self._directory(conn, [user_id])

    async def conversation_devices(self, ctx: AuthContext, conv_id: str) -> list[dict[str, Any]]:
        """Every active device, with keys, of the conversation's current members."""
        async with self.db.read() as conn:
            current = list(
                (
                    await conn.execute(
                        select(members.c.user_id).where(
                            and_(members.c.conversation_id == conv_id, members.c.left_seq.is_(None))
                        )
                    )
                ).scalars()
            )
            if ctx.user_id not in current:
                raise NotFound("conversation_not_found", "no such conversation")
            return await self._directory(conn, current)

    async def claim(self, ctx: AuthContext, device_ids: list[str]) -> list[dict[str, Any]]:
        """A bundle per device of the caller or of someone they share a conversation with
        (anyone else's device is "not found", as the directory answers), each with one
        one-time prekey while any are left and within the allowances
        (:data:`PREKEYS_PER_CLAIMER_HOUR`, :data:`PREKEYS_PER_DEVICE_HOUR`)."""
        bundles = []
        hour = self.clock.now_ms() // HOUR_MS
        async with self.db.write() as conn:
            await conn.execute(delete(prekey_claims).where(prekey_claims.c.hour < hour))
            for device_id in device_ids:
                found = await self._directory(conn, None, device_id)
                if not found or not await _may_see(conn, ctx, found[0]["user_id"]):
                    raise NotFound("device_not_found", f"no published keys for device {device_id}")
                bundle = found[0]
                claimed = {"claimer_id": ctx.user_id, "device_id": device_id, "hour": hour}
                allowed = (
                    await self._claimed(conn, claimed) < PREKEYS_PER_CLAIMER_HOUR
                    and await self._handed_out(conn, device_id, hour) < PREKEYS_PER_DEVICE_HOUR
                )
                picked = None
                if allowed:
                    picked = (
                        await conn.execute(
                            select(one_time_prekeys.c.key_id)
                            .where(one_time_prekeys.c.device_id == device_id)
                            .order_by(one_time_prekeys.c.key_id)
                            .limit(1)
                            .with_for_update(skip_locked=True)
                        )
                    ).scalar()
                bundle["opk_id"], bundle["opk"] = None, None
                if picked is not None:
                    taken = (
                        await conn.execute(
                            delete(one_time_prekeys)
                            .where(
                                and_(
                                    one_time_prekeys.c.device_id == device_id,
                                    one_time_prekeys.c.key_id == picked,
                                )
                            )
                            .returning(one_time_prekeys.c.public_key)
                        )
                    ).scalar()
                    if taken is not None:
                        bundle["opk_id"], bundle["opk"] = picked, b64(taken)
                        await bump(conn, prekey_claims, claimed, "count")
                        # The owner hears only of a stock that went down, not of every claim.
                        left = await self._stock(conn, device_id)
                        if left < LOW_PREKEYS:
                            self.db.publish_on_commit(
                                conn,
                                [user_topic(bundle["user_id"])],
                                {"type": "prekeys_low", "device_id": device_id, "remaining": left},
                            )
                bundles.append(bundle)
        return bundles

    async def _handed_out(self, conn: AsyncConnection, device_id: str, hour: int) -> int:
        total = await conn.scalar(
            select(func.coalesce(func.sum(prekey_claims.c.count), 0)).where(
                prekey_claims.c.device_id == device_id, prekey_claims.c.hour == hour
            )
        )
        return int(total or 0)

    async def _claimed(self, conn: AsyncConnection, claimed: dict[str, Any]) -> int:
        count = (
            await conn.execute(
                select(prekey_claims.c.count).where(
                    and_(*(prekey_claims.c[k] == v for k, v in claimed.items()))
                )
            )
        ).scalar()
        return int(count or 0)

    async def _directory(
        self, conn: AsyncConnection, user_ids: list[str] | None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        query = (
            select(device_keys, users.c.username)
            .join(devices, devices.c.id == device_keys.c.device_id)
            .join(users, users.c.id == device_keys.c.user_id)
            .where(devices.c.revoked_at.is_(None))
            .order_by(users.c.username, device_keys.c.device_id)
        )
        if user_ids is not None:
            query = query.where(device_keys.c.user_id.in_(user_ids))
        if device_id is not None:
            query = query.where(device_keys.c.device_id == device_id)
        return [
            {
                "user_id": r.user_id,
                "username": r.username,
                "device_id": r.device_id,
                "identity_key": b64(r.identity_key),
                "signing_key": b64(r.signing_key),
                "identity_sig": b64(r.identity_sig),
                "spk_id": r.spk_id,
                "spk": b64(r.spk),
                "spk_sig": b64(r.spk_sig),
            }
            for r in await conn.execute(query)
        ]

    async def _stock(self, conn: AsyncConnection, device_id: str) -> int:
        count: int = (
            await conn.execute(
                select(func.count())
                .select_from(one_time_prekeys)
                .where(one_time_prekeys.c.device_id == device_id)
            )
        ).scalar_one()
        return count

    async def _require_published(self, conn: AsyncConnection, device_id: str) -> None:
        exists = (
            await conn.execute(
                select(device_keys.c.device_id).where(device_keys.c.device_id == device_id)
            )
        ).first()
        if exists is None:
            raise Conflict("keys_not_published", "publish this device's keys first")


class InboxService:
    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def send(self, ctx: AuthContext, items: list[tuple[str, bytes]]) -> list[int]:
        """Queues pairwise ciphertexts for other devices. Only devices of people the sender
        shares a conversation with (or the sender's own) can be written to: no spam by inbox."""
        if len(items) > MAX_INBOX_BATCH:
            raise TooLarge("too_many_messages", f"at most {MAX_INBOX_BATCH} per request")
        for _, body in items:
            if not body:
                raise Invalid("empty_message", "inbox message body is empty")
            if len(body) > MAX_INBOX_BODY:
                raise TooLarge("message_too_large", f"inbox message over {MAX_INBOX_BODY} bytes")
        now = self.clock.now_ms()
        stored: list[int] = []
        async with self.db.write() as conn:
            owners = await self._owners(conn, [d for d, _ in items])
            allowed = await self._contacts(conn, ctx.user_id)
            for device_id, body in items:
                owner = owners.get(device_id)
                if owner is None:
                    raise NotFound("device_not_found", f"no such device: {device_id}")
                if owner not in allowed:
                    raise Forbidden(
                        "not_a_contact", "you share no conversation with that device's owner"
                    )
                new_id = (
                    await conn.execute(
                        insert(inbox)
                        .values(
                            device_id=device_id,
                            sender_user_id=ctx.user_id,
                            sender_device_id=ctx.device_id,
                            body=body,
                            created_at=now,
                        )
                        .returning(inbox.c.id)
                    )
                ).scalar_one()
                stored.append(new_id)
                event = {
                    "type": "inbox",
                    "id": new_id,
                    "device_id": device_id,
                    "sender_id": ctx.user_id,
                    "sender": ctx.username,
                    "sender_device_id": ctx.device_id,
                    "body": b64(body),
                    "created_at": now,
                }
                self.db.publish_on_commit(conn, [user_topic(owner)], event)
        return stored

    async def pending(
        self, ctx: AuthContext, after: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(inbox, users.c.username)
                .join(users, users.c.id == inbox.c.sender_user_id)
                .where(and_(inbox.c.device_id == ctx.device_id, inbox.c.id > after))
                .order_by(inbox.c.id)
                .limit(limit)
            )
            return [
                {
                    "type": "inbox",
                    "id": r.id,
                    "device_id": r.device_id,
                    "sender_id": r.sender_user_id,
                    "sender": r.username,
                    "sender_device_id": r.sender_device_id,
                    "body": b64(r.body),
                    "created_at": r.created_at,
                }
                for r in rows
            ]

    async def ack(self, ctx: AuthContext, up_to: int, only: Collection[int] | None = None) -> int:
        """Deletes this device's messages up to ``up_to`` (of those, only the ids in ``only``
        when given: what the realtime connection actually delivered, since a message with a
        lower id can arrive after a higher one): acknowledged means gone."""
        if only is not None and not only:
            return 0
        where = and_(inbox.c.device_id == ctx.device_id, inbox.c.id <= up_to)
        if only is not None:
            where = and_(where, inbox.c.id.in_(sorted(only)))
        async with self.db.write() as conn:
            result = await conn.execute(delete(inbox).where(where))
            return result.rowcount

    async def _owners(self, conn: AsyncConnection, device_ids: list[str]) -> dict[str, str]:
        rows = await conn.execute(
            select(devices.c.id, devices.c.user_id).where(
                and_(devices.c.id.in_(device_ids), devices.c.revoked_at.is_(None))
            )
        )
        return {r.id: r.user_id for r in rows}

    async def _contacts(self, conn: AsyncConnection, user_id: str) -> set[str]:
        mine = select(members.c.conversation_id).where(
            and_(members.c.user_id == user_id, members.c.left_seq.is_(None))
        )
        rows = await conn.execute(
            select(members.c.user_id)
            .distinct()
            .where(and_(members.c.conversation_id.in_(mine), members.c.left_seq.is_(None)))
        )
        return {user_id, *rows.scalars()}


async def _may_see(conn: AsyncConnection, ctx: AuthContext, owner: str) -> bool:
    """Whose keys the caller may have: their own, and of people they share a conversation with
    (a request included: its keys are needed to read it)."""
    return owner == ctx.user_id or await shares_a_conversation(conn, ctx.user_id, owner)
