"""Attachment tables.

A blob is one attachment's ciphertext, uploaded in numbered chunks into one conversation. The
server knows its size, its conversation and who uploaded it; never its name, type or content,
which travel inside the end-to-end encrypted message that points to it.
"""

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, Table

from secureconnect.store.base import metadata

blobs = Table(
    "blobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("uploader_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("size", BigInteger, nullable=False),  # ciphertext bytes, all chunks together
    Column("chunk_size", Integer, nullable=False),  # every chunk's length but the last's
    # The conversation's last_seq when the upload began: a former member may still fetch it
    # if they left after that (the message pointing to it may have reached them).
    Column("at_seq", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger, nullable=True),  # NULL while uploading
    Index("ix_blobs_uploader_id", "uploader_id"),
    Index("ix_blobs_conversation_id", "conversation_id"),
)

# The chunks that have arrived: an interrupted upload resumes from what is missing.
blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_id", String(32), ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True),
    Column("n", Integer, primary_key=True),
)

__all__ = ["blob_chunks", "blobs"]
