"""Request and response shapes of the attachment API. Chunk bodies are raw bytes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from secureconnect.schemas import Strict

MIN_CHUNK = 64 * 1024
MAX_CHUNK = 8 * 1024 * 1024 + 1024  # 8 MiB of plaintext, plus room for its tag


class CreateBlob(Strict):
    conversation_id: str = Field(min_length=1, max_length=32)
    size: int = Field(ge=0, le=2**53, description="the ciphertext's length, all chunks together")
    chunk_size: int = Field(
        ge=MIN_CHUNK,
        le=MAX_CHUNK,
        description="the length of every chunk but the last (which holds the rest)",
    )


class BlobOut(BaseModel):
    id: str
    conversation_id: str
    size: int
    chunk_size: int
    chunks: int = Field(description="how many chunks: numbered 0 to chunks - 1")
    complete: bool = Field(description="every chunk arrived and the uploader completed it")
    received: list[int] = Field(description="the chunks that have arrived, while uploading")
    created_at: int


class UsageOut(BaseModel):
    used_bytes: int = Field(description="attachment bytes this user keeps stored now")
    quota_bytes: int
    max_attachment_bytes: int = Field(description="the largest attachment (ciphertext)")
    chunk_min: int = MIN_CHUNK
    chunk_max: int = MAX_CHUNK


class Collected(BaseModel):
    """What a garbage collection round removed."""

    abandoned_uploads: int = Field(description="uploads not completed in time")
    unreachable: int = Field(description="blobs of conversations that nobody is in any more")
    bytes: int
