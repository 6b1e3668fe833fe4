"""Who may put, fetch and remove which attachment, and what is removed by itself.

Rules:
- only a current member of a conversation uploads into it, within the size limit and their quota;
- only the uploader sends chunks, completes and deletes (a sender deleting a message for
  everyone removes its attachment this way: the server cannot read which message was deleted);
- a member fetches a complete blob, as does a former member who left after it was uploaded;
  to anyone else it does not exist (404, as a conversation they were never in);
- garbage: uploads not completed within ``upload_ttl_s``, and blobs of conversations that
  nobody is a member of any more.

Rows are removed before bytes: a crash between the two leaves bytes nobody can reach, never a
row pointing at nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.blobs.models import blob_chunks, blobs
from secureconnect.blobs.schemas import BlobOut, Collected, CreateBlob, UsageOut
from secureconnect.blobs.storage import BlobStorage
from secureconnect.chat.models import conversations, members
from secureconnect.clock import SYSTEM_CLOCK, Clock
from secureconnect.errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from secureconnect.store import Database
from secureconnect.store.base import new_id
from secureconnect.store.sql import upsert

log = logging.getLogger("secureconnect.blobs")


@dataclass(frozen=True)
class Blob:
    id: str
    conversation_id: str
    uploader_id: str
    size: int
    chunk_size: int
    at_seq: int
    created_at: int
    completed_at: int | None

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    def chunk_length(self, n: int) -> int:
        return min(self.chunk_size, self.size - n * self.chunk_size)

    def out(self, received: list[int]) -> BlobOut:
        return BlobOut(
            id=self.id,
            conversation_id=self.conversation_id,
            size=self.size,
            chunk_size=self.chunk_size,
            chunks=self.chunks,
            complete=self.completed_at is not None,
            received=received,
            created_at=self.created_at,
        )


NO_SUCH = ("blob_not_found", "no such attachment")


class BlobService:
    def __init__(
        self,
        db: Database,
        storage: BlobStorage,
        max_bytes: int,
        quota_bytes: int,
        upload_ttl_s: int,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.storage = storage
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes
        self.upload_ttl_s = upload_ttl_s
        self.clock = clock

    async def usage(self, user_id: str) -> UsageOut:
        async with self.db.read() as conn:
            used = await _used(conn, user_id)
        return UsageOut(
            used_bytes=used, quota_bytes=self.quota_bytes, max_attachment_bytes=self.max_bytes
        )

    async def create(self, user_id: str, body: CreateBlob) -> BlobOut:
        if body.size > self.max_bytes:
            raise TooLarge(
                "attachment_too_large",
                f"the attachment is {body.size} bytes; the limit is {self.max_bytes}",
            )
        blob_id = new_id()
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    select(conversations.c.last_seq)
                    .join(members, members.c.conversation_id == conversations.c.id)
                    .where(
                        conversations.c.id == body.conversation_id,
                        members.c.user_id == user_id,
                        members.c.left_seq.is_(None),
                    )
                )
            ).first()
            if row is None:
                raise NotFound("conversation_not_found", "no such conversation")
            used = await _used(conn, user_id)
            if used + body.size > self.quota_bytes:
                raise TooLarge(
                    "quota_exceeded",
                    f"your attachments take {used} of {self.quota_bytes} bytes; this one needs "
                    f"{body.size} more (delete some to make room)",
                )
            values = {
                "id": blob_id,
                "conversation_id": body.conversation_id,
                "uploader_id": user_id,
                "size": body.size,
                "chunk_size": body.chunk_size,
                "at_seq": row.last_seq,
                "created_at": now,
                "completed_at": None,
            }
            await conn.execute(blobs.insert().values(**values))
        return Blob(**values).out([])

    async def put_chunk(
        self, user_id: str, blob_id: str, n: int, length: int | None, body: AsyncIterator[bytes]
    ) -> None:
        async with self.db.read() as conn:
            blob = await self._own(conn, user_id, blob_id)
        if blob.completed_at is not None:
            raise Conflict("blob_complete", "this attachment is complete; it cannot change")
        if not 0 <= n < blob.chunks:
            raise Invalid("bad_chunk", f"chunk {n} is not one of 0 to {blob.chunks - 1}")
        want = blob.chunk_length(n)
        if length is None:
            raise Invalid("length_required", f"send Content-Length: {want}")
        if length != want:
            raise Invalid("bad_chunk_length", f"chunk {n} must be {want} bytes; got {length}")
        await self.storage.write_chunk(blob_id, n, body, want)
        async with self.db.write() as conn:
            still = (
                await conn.execute(select(blobs.c.completed_at).where(blobs.c.id == blob_id))
            ).first()
            if still is not None and still.completed_at is None:
                await upsert(conn, blob_chunks, {"blob_id": blob_id, "n": n}, ["blob_id", "n"])
                return
        # Deleted or collected while its bytes were arriving: they must not stay behind.
        await self.storage.delete(blob_id)
        raise NotFound(*NO_SUCH)

    async def complete(self, user_id: str, blob_id: str) -> BlobOut:
        async with self.db.write() as conn:
            blob = await self._own(conn, user_id, blob_id)
            received = await _received(conn, blob_id)
            if blob.completed_at is None:
                missing = [n for n in range(blob.chunks) if n not in set(received)]
                if missing:
                    shown = ", ".join(map(str, missing[:10])) + (
                        " ..." if len(missing) > 10 else ""
                    )
                    raise Conflict("chunks_missing", f"chunks not received yet: {shown}")
                now = self.clock.now_ms()
                await conn.execute(
                    update(blobs).where(blobs.c.id == blob_id).values(completed_at=now)
                )
                blob = Blob(**{**blob.__dict__, "completed_at": now})
        return blob.out(received)

    async def describe(self, user_id: str, blob_id: str) -> BlobOut:
        """The uploader sees an upload in progress (to resume it); members see complete ones."""
        async with self.db.read() as conn:
            blob = await _blob(conn, blob_id)
            if blob is None or (
                blob.uploader_id != user_id and not await _may_fetch(conn, user_id, blob)
            ):
                raise NotFound(*NO_SUCH)
            return blob.out(await _received(conn, blob_id))

    async def open(self, user_id: str, blob_id: str) -> tuple[Blob, AsyncIterator[bytes]]:
        """The ciphertext, streamed; checked first, so that a refusal is a clean 404."""
        async with self.db.read() as conn:
            blob = await _blob(conn, blob_id)
            if blob is None or not await _may_fetch(conn, user_id, blob):
                raise NotFound(*NO_SUCH)
        await self.storage.readable(blob_id)
        return blob, self.storage.read(blob_id, blob.chunks)

    async def delete(self, user_id: str, blob_id: str) -> None:
        async with self.db.write() as conn:
            blob = await _blob(conn, blob_id)
            if blob is None:
                raise NotFound(*NO_SUCH)
            if blob.uploader_id != user_id:
                if await _may_fetch(conn, user_id, blob):
                    raise Forbidden("not_uploader", "only who sent an attachment may delete it")
                raise NotFound(*NO_SUCH)
            await conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id == blob_id))
            await conn.execute(delete(blobs).where(blobs.c.id == blob_id))
        await self.storage.delete(blob_id)

    async def collect(self) -> Collected:
        """Removes abandoned uploads and blobs nobody may fetch any more."""
        cutoff = self.clock.now_ms() - self.upload_ttl_s * 1000
        nobody_in = ~exists().where(
            members.c.conversation_id == blobs.c.conversation_id, members.c.left_seq.is_(None)
        )
        async with self.db.write() as conn:
            abandoned = (
                await conn.execute(
                    select(blobs.c.id, blobs.c.size).where(
                        blobs.c.completed_at.is_(None), blobs.c.created_at < cutoff
                    )
                )
            ).all()
            unreachable = (
                await conn.execute(select(blobs.c.id, blobs.c.size).where(nobody_in))
            ).all()
            ids = list({r.id for r in (*abandoned, *unreachable)})
            if ids:
                await conn.execute(delete(blob_chunks).where(blob_chunks.c.blob_id.in_(ids)))
                await conn.execute(delete(blobs).where(blobs.c.id.in_(ids)))
        for blob_id in ids:
            await self.storage.delete(blob_id)
        gone = {r.id: r.size for r in (*abandoned, *unreachable)}
        result = Collected(
            abandoned_uploads=len({r.id for r in abandoned}),
            unreachable=len({r.id for r in unreachable} - {r.id for r in abandoned}),
            bytes=sum(gone.values()),
        )
        if ids:
            log.info("blobs collected", extra={"fields": result.model_dump()})
        return result

    async def _own(self, conn: AsyncConnection, user_id: str, blob_id: str) -> Blob:
        blob = await _blob(conn, blob_id)
        if blob is None or blob.uploader_id != user_id:
            raise NotFound(*NO_SUCH)
        return blob


async def _blob(conn: AsyncConnection, blob_id: str) -> Blob | None:
    row = (await conn.execute(select(blobs).where(blobs.c.id == blob_id))).first()
    return Blob(**row._mapping) if row is not None else None


async def _received(conn: AsyncConnection, blob_id: str) -> list[int]:
    rows = await conn.execute(
        select(blob_chunks.c.n).where(blob_chunks.c.blob_id == blob_id).order_by(blob_chunks.c.n)
    )
    return [r.n for r in rows]


async def _may_fetch(conn: AsyncConnection, user_id: str, blob: Blob) -> bool:
    if blob.completed_at is None:
        return False
    row = (
        await conn.execute(
            select(members.c.left_seq).where(
                members.c.conversation_id == blob.conversation_id, members.c.user_id == user_id
            )
        )
    ).first()
    return row is not None and (row.left_seq is None or row.left_seq > blob.at_seq)


async def _used(conn: AsyncConnection, user_id: str) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(blobs.c.size), 0)).where(blobs.c.uploader_id == user_id)
    )
    return int(total or 0)
