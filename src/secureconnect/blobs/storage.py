"""Where blob chunks are kept: one interface, two backends (as Synapse keeps its media
repository behind storage providers). The embedded default is a folder; a deployment with
several chat-service replicas uses S3-compatible object storage, which every replica shares.

Each chunk is its own file or object (``<id>/<n>``), written whole before it counts: a chunk
that stops halfway leaves nothing, and the upload resumes by sending that chunk again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from secureconnect.errors import Invalid, Unavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

READ_PIECE = 256 * 1024
log = logging.getLogger("secureconnect.blobs")


class ShortChunk(Invalid):
    """The body did not hold the bytes its length promised."""

    def __init__(self, n: int, want: int, got: int) -> None:
        super().__init__("bad_chunk_length", f"chunk {n} must be {want} bytes; got {got}")


class BlobStorage(Protocol):
    name: str

    async def write_chunk(
        self, blob_id: str, n: int, body: AsyncIterator[bytes], size: int
    ) -> None:
        """Stores exactly ``size`` bytes from ``body`` (else :class:`ShortChunk`, nothing kept)."""

    async def readable(self, blob_id: str) -> None:
        """Raises Unavailable unless the blob's first chunk can be read now: checked before a
        download's headers go out, so that a storage outage is a 503, not a cut stream."""

    def read(self, blob_id: str, chunks: int) -> AsyncIterator[bytes]:
        """Every chunk in order, in pieces: memory stays flat whatever the blob's size."""

    async def delete(self, blob_id: str) -> None:
        """Removes every chunk of the blob; nothing to remove is not an error."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class LocalStorage:
    """A folder: ``<root>/<id[:2]>/<id>/<n>``. In Kubernetes, a volume every replica mounts."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _folder(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    async def write_chunk(
        self, blob_id: str, n: int, body: AsyncIterator[bytes], size: int
    ) -> None:
        folder = self._folder(blob_id)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / str(n)
        partial = folder / f"{n}.part"
        got = 0
        try:
            with partial.open("wb") as out:
                async for piece in body:
                    got += len(piece)
                    if got > size:
                        break
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())  # acknowledged bytes survive a crash, as messages do
            if got != size:
                raise ShortChunk(n, size, got)
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)

    async def readable(self, blob_id: str) -> None:
        if not (self._folder(blob_id) / "0").is_file():
            log.error("blob store failed", extra={"fields": {"op": "read", "blob": blob_id}})
            raise Unavailable("blob_store_unavailable", "this attachment's storage is unavailable")

    async def read(self, blob_id: str, chunks: int) -> AsyncIterator[bytes]:
        folder = self._folder(blob_id)
        for n in range(chunks):
            with (folder / str(n)).open("rb") as chunk:
                while piece := chunk.read(READ_PIECE):
                    yield piece

    async def delete(self, blob_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._folder(blob_id), True)

    async def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise Unavailable("blob_store_unavailable", f"cannot write to {self.root}")

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def _s3_errors(what: str) -> AsyncIterator[None]:
    """An S3 server that is down, refuses or times out is a 503, never a 500 (the SDK and the
    web client retry a chunk on it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (TimeoutError, BotoCoreError, ClientError, OSError) as error:
        log.error(
            "blob store failed", extra={"fields": {"op": what, "error": type(error).__name__}}
        )
        raise Unavailable(
            "blob_store_unavailable", "attachment storage is unavailable; try again"
        ) from error


class S3Storage:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph; tested against moto's server). The bucket
    is created on first use if it is missing. A chunk is read into memory before it is put
    (S3 wants its length and checksum first): at most one chunk per upload in flight."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._options = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()

    def _key(self, blob_id: str, n: int | None = None) -> str:
        base = f"{self.prefix}/{blob_id}/" if self.prefix else f"{blob_id}/"
        return base if n is None else f"{base}{n}"

    async def _s3(self) -> S3Client:
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session
                from botocore.exceptions import ClientError

                session = get_session()
                # Bounded: a storage outage is a 503 within seconds, not a hung upload.
                config = AioConfig(
                    connect_timeout=3,
                    read_timeout=30,
                    retries={"max_attempts": 3, "mode": "standard"},
                )
                client = await self._stack.enter_async_context(
                    session.create_client("s3", config=config, **self._options)
                )
                try:
                    await client.head_bucket(Bucket=self.bucket)
                except ClientError:
                    await client.create_bucket(Bucket=self.bucket)
                self._client = client
            return self._client

    async def write_chunk(
        self, blob_id: str, n: int, body: AsyncIterator[bytes], size: int
    ) -> None:
        data = bytearray()
        async for piece in body:
            data += piece
            if len(data) > size:
                break
        if len(data) != size:
            raise ShortChunk(n, size, len(data))
        async with _s3_errors("put"):
            client = await self._s3()
            await client.put_object(Bucket=self.bucket, Key=self._key(blob_id, n), Body=bytes(data))

    async def readable(self, blob_id: str) -> None:
        async with _s3_errors("head"):
            client = await self._s3()
            await client.head_object(Bucket=self.bucket, Key=self._key(blob_id, 0))

    async def read(self, blob_id: str, chunks: int) -> AsyncIterator[bytes]:
        client = await self._s3()
        for n in range(chunks):
            answer = await client.get_object(Bucket=self.bucket, Key=self._key(blob_id, n))
            async with answer["Body"] as stream:
                while piece := await stream.read(READ_PIECE):
                    yield piece

    async def delete(self, blob_id: str) -> None:
        async with _s3_errors("delete"):
            client = await self._s3()
            listed = await client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(blob_id))
        keys = [{"Key": o["Key"]} for o in listed.get("Contents", []) if "Key" in o]
        if keys:
            await client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]

    async def ping(self) -> None:
        async with _s3_errors("ping"):
            client = await self._s3()
            await client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def storage_from(
    url: str,
    root: Path,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> BlobStorage:
    """``local`` (the folder ``root``) or ``s3://bucket/prefix``."""
    if url == "local":
        return LocalStorage(root)
    if url.startswith("s3://") and len(url) > 5:
        bucket, _, prefix = url[5:].partition("/")
        return S3Storage(bucket, prefix, endpoint_url, region, access_key_id, secret_access_key)
    raise ValueError(f'blob_store must be "local" or "s3://bucket[/prefix]", not {url!r}')
