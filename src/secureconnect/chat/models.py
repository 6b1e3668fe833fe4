"""Chat tables.

A conversation's timeline is one ordered list of events numbered 1, 2, 3... (``seq``): client
messages, whose body the server never reads, and membership changes, which the server writes.
Each member sees the part of the timeline between joining and leaving.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)

from secureconnect.store.base import metadata

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # "direct" | "group"
    Column("name", String(200), nullable=True),
    # For a 1:1 conversation the two user ids, sorted: one direct conversation per pair.
    Column("direct_key", String(80), nullable=True, unique=True),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False, default=0),
    # A group's picture, set by an admin: the tag of its images in ``avatars`` (NULL: none).
    Column("avatar", String(16), nullable=True),
)

members = Table(
    "members",
    metadata,
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(16), nullable=False),  # "admin" | "member"
    # Visible window of the timeline: joined_seq < seq <= left_seq (left_seq NULL: still a member).
    Column("joined_seq", BigInteger, nullable=False),
    Column("left_seq", BigInteger, nullable=True),
    # A message request: set while the member has not accepted a conversation that this user
    # (a stranger to them) put them in; NULL once accepted, or for people already in contact.
    Column("requested_by", String(32), nullable=True),
    Index("ix_members_user_id", "user_id"),
)

# Who will not be put in conversations by whom: a blocked user cannot start one with, or add,
# the person who blocked them (they are told what an unknown name gets).
user_blocks = Table(
    "user_blocks",
    metadata,
    Column("blocker_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("blocked_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("at", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),  # "message" | "membership"
    Column("sender_user_id", String(32), nullable=False),
    Column("sender_device_id", String(32), nullable=True),
    Column("client_msg_id", String(64), nullable=True),
    Column("content_type", String(100), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("conversation_id", "sender_device_id", "client_msg_id"),
)

receipts = Table(
    "receipts",
    metadata,
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("delivered_seq", BigInteger, nullable=False, default=0),
    Column("read_seq", BigInteger, nullable=False, default=0),
)

# How far each device has acknowledged each conversation: where its stream resumes.
device_cursors = Table(
    "device_cursors",
    metadata,
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", BigInteger, nullable=False),
)

__all__ = ["conversations", "device_cursors", "events", "members", "receipts", "user_blocks"]
