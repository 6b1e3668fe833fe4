"""Call tables: a call of a conversation, the devices in it, and who declined.

``open_key`` holds the conversation id while the call is ringing or live and NULL once it ended:
a unique column, so a conversation has at most one open call on every backend (NULLs never
collide), and two people pressing "call" at once get the same one.
"""

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, String, Table

from secureconnect.store.base import metadata

calls = Table(
    "calls",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "conversation_id",
        String(32),
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("open_key", String(32), nullable=True, unique=True),
    Column("media", String(8), nullable=False),  # "audio" | "video"
    Column("state", String(8), nullable=False),  # "ringing" | "live" | "ended"
    Column("outcome", String(8), nullable=True),  # "ended" | "missed" | "declined"
    Column("caller_user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("caller_device_id", String(32), nullable=False),
    # Which replica's Janus hosts the call (its host name; "" once released by a replica that
    # shut down), the URL other replicas forward its requests to, Janus's room number there, and
    # that Janus's generation (the roster's sfu_epoch: clients rejoin when it changes).
    Column("owner", String(255), nullable=False),
    Column("owner_url", String(255), nullable=True),
    Column("room", BigInteger, nullable=False),
    Column("sfu_epoch", BigInteger, nullable=False, default=0, server_default="0"),
    # Goes up with every roster change published: a device drops one older than what it has.
    Column("version", BigInteger, nullable=False, default=0, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("answered_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Index("ix_calls_conversation_id", "conversation_id"),
)

call_participants = Table(
    "call_participants",
    metadata,
    Column("call_id", String(32), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("feed_id", BigInteger, nullable=True),
    Column("publishing", Boolean, nullable=False, default=False),
    Column("audio", Boolean, nullable=False, default=True),
    Column("video", Boolean, nullable=False, default=True),
    Column("screen", Boolean, nullable=False, default=False),
    Column("joined_at", BigInteger, nullable=False),
    Column("heard_at", BigInteger, nullable=False),
    Column("left_at", BigInteger, nullable=True),
)

call_declines = Table(
    "call_declines",
    metadata,
    Column("call_id", String(32), ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("at", BigInteger, nullable=False),
)

__all__ = ["call_declines", "call_participants", "calls"]
