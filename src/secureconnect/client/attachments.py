"""Files, images and voice notes: encrypted here, uploaded as ciphertext, and pointed to by an
end-to-end encrypted message (``ATTACHMENT``) that carries the key, the SHA-256 and size of the
plaintext, its type and name, and a small encrypted thumbnail. ``static/js/attachments.js``
reads and writes the same pointer.

A file is read, encrypted, uploaded, downloaded, decrypted and written a chunk at a time
(``crypto.attachment``): memory stays flat whatever its size.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from secureconnect.client.api import Client
from secureconnect.crypto import attachment as crypto
from secureconnect.crypto.primitives import CryptoError, b64, unb64
from secureconnect.errors import SecureConnectError

ATTACHMENT = "application/vnd.secureconnect.attachment+json"
THUMB_PX = 320  # the longer side of a thumbnail
MAX_NAME = 255
MAX_THUMB_BYTES = 24 * 1024
_TYPE = re.compile(r"[A-Za-z0-9_.+-]{1,60}/[A-Za-z0-9_.+-]{1,60}")
_BLOB = re.compile(r"[0-9a-f]{32}")
# What a file's name may not carry to a screen or a disk: control characters, separators.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


class AttachmentCorrupt(SecureConnectError):
    """What arrived is not what the sender encrypted: it is not saved."""


@dataclass(frozen=True)
class Attachment:
    blob: str
    key: bytes
    sha256: str
    size: int
    chunk: int
    type: str
    name: str
    caption: str = ""
    thumb: bytes | None = None  # JPEG, at most THUMB_PX a side
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None  # a voice note's length

    @property
    def is_image(self) -> bool:
        return self.type.startswith("image/")

    def body(self) -> bytes:
        data: dict[str, Any] = {
            "blob": self.blob,
            "key": b64(self.key),
            "sha256": self.sha256,
            "size": self.size,
            "chunk": self.chunk,
            "type": self.type,
            "name": self.name,
        }
        if self.caption:
            data["caption"] = self.caption
        if self.thumb is not None:
            data["thumb"] = b64(self.thumb)
        for field, value in (("w", self.width), ("h", self.height), ("ms", self.duration_ms)):
            if value is not None:
                data[field] = value
        return json.dumps(data, ensure_ascii=False).encode()


def safe_name(name: str) -> str:
    """A name from someone else, fit to show and to save: no control or direction-changing
    characters, no folders, never empty or a dot name."""
    cleaned = _UNSAFE.sub("_", name).strip().lstrip(".")[:MAX_NAME]
    return cleaned or "attachment"


def parse(body: bytes) -> Attachment | None:
    """The pointer in a received message, or None when it is not a well-formed one (a message
    from a faulty or hostile client is shown as unreadable, never trusted)."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            return None
        key = unb64(data["key"])
        fields = (data["blob"], data["sha256"], data["type"], data["name"])
        if not all(isinstance(f, str) for f in fields) or not _BLOB.fullmatch(data["blob"]):
            return None
        size, chunk = data["size"], data["chunk"]
        if type(size) is not int or type(chunk) is not int or size < 0 or chunk < 1024:
            return None
        if len(key) != crypto.KEY_BYTES or not re.fullmatch(r"[0-9a-f]{64}", data["sha256"]):
            return None
        thumb = unb64(data["thumb"]) if isinstance(data.get("thumb"), str) else None
        caption = data.get("caption", "")

        def number(field: str) -> int | None:
            value = data.get(field)
            return value if type(value) is int and 0 <= value < 2**31 else None

        return Attachment(
            data["blob"],
            key,
            data["sha256"],
            size,
            chunk,
            data["type"] if _TYPE.fullmatch(data["type"]) else "application/octet-stream",
            safe_name(data["name"]),
            caption if isinstance(caption, str) else "",
            thumb if thumb is not None and len(thumb) <= MAX_THUMB_BYTES else None,
            number("w"),
            number("h"),
            number("ms"),
        )
    except (ValueError, KeyError, TypeError, CryptoError):
        return None


def describe(
    path: Path, content_type: str | None = None
) -> tuple[int, str, bytes | None, int | None, int | None]:
    """(size, type, thumbnail, width, height) of a file about to be sent."""
    kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    facts = thumbnail(path) if kind.startswith("image/") else (None, None, None)
    return (path.stat().st_size, kind, *facts)


def target(dest: Path, name: str) -> Path:
    """Where a download goes: into ``dest`` under its (safe) name, or ``dest`` itself."""
    return dest / name if dest.is_dir() else dest


def thumbnail(path: Path) -> tuple[bytes | None, int | None, int | None]:
    """(JPEG thumbnail, width, height) of an image; re-encoding drops its metadata (location,
    camera). Nothing for what Pillow cannot read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            image.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=70)
    except (UnidentifiedImageError, OSError, ValueError):
        return None, None, None
    data = out.getvalue()
    return (data if len(data) <= MAX_THUMB_BYTES else None), width, height


async def upload(
    client: Client,
    conversation_id: str,
    source: BinaryIO,
    size: int,
    chunk: int = crypto.DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> tuple[str, bytes, str]:
    """Encrypts ``size`` bytes from ``source`` with a fresh key and uploads them into the
    conversation: (blob id, key, plaintext SHA-256). An upload that fails is removed."""
    key = secrets.token_bytes(crypto.KEY_BYTES)
    blob = await client.create_blob(
        conversation_id, crypto.ciphertext_size(size, chunk), chunk + crypto.TAG_BYTES
    )
    digest = hashlib.sha256()
    count = crypto.chunk_count(size, chunk)
    try:
        for index in range(count):
            plaintext = source.read(chunk)
            digest.update(plaintext)
            last = index == count - 1
            await client.put_chunk(
                blob.id, index, crypto.encrypt_chunk(key, index, last, plaintext)
            )
            if progress is not None:
                progress(min(size, (index + 1) * chunk), size)
        await client.complete_blob(blob.id)
    except BaseException:
        await forget(client, blob.id)
        raise
    return blob.id, key, digest.hexdigest()


async def forget(client: Client, blob_id: str) -> None:
    try:
        await client.delete_blob(blob_id)
    except Exception:  # the server will collect the unfinished upload by itself
        return


async def download(
    client: Client, pointer: Attachment, dest: Path, progress: Progress | None = None
) -> Path:
    """Fetches, decrypts and checks the attachment into ``dest`` (a file; written beside it
    first and moved into place only once its SHA-256 and size match the message's)."""
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            async for plaintext in plaintext_chunks(client, pointer):
                digest.update(plaintext)
                out.write(plaintext)
                written += len(plaintext)
                if progress is not None:
                    progress(written, pointer.size)
        if written != pointer.size or digest.hexdigest() != pointer.sha256:
            raise AttachmentCorrupt(
                f"{pointer.name}: what arrived is not what was sent (size or SHA-256 differs)"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


async def plaintext_chunks(client: Client, pointer: Attachment) -> AsyncIterator[bytes]:
    sealed = pointer.chunk + crypto.TAG_BYTES
    count = crypto.chunk_count(pointer.size, pointer.chunk)
    buffer = bytearray()
    index = 0
    try:
        async for piece in client.blob_content(pointer.blob):
            buffer += piece
            while len(buffer) >= sealed and index < count - 1:
                yield crypto.decrypt_chunk(pointer.key, index, False, bytes(buffer[:sealed]))
                del buffer[:sealed]
                index += 1
        if index != count - 1:
            raise AttachmentCorrupt(f"{pointer.name}: the attachment arrived cut short")
        yield crypto.decrypt_chunk(pointer.key, index, True, bytes(buffer))
    except CryptoError as error:
        raise AttachmentCorrupt(f"{pointer.name}: {error}") from error
