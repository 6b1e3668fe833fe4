"""Profile tables.

Unlike messages, profiles are not end-to-end encrypted (as in Matrix, not as in Signal): the
server resizes pictures and strips their metadata, and shows them only to people who share a
conversation with their owner (decision 0030).
"""

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, LargeBinary, String, Table

from secureconnect.store.base import metadata

profiles = Table(
    "profiles",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("display_name", String(64), nullable=True),
    Column("avatar", String(16), nullable=True),  # the tag of its images in ``avatars``
    Column("updated_at", BigInteger, nullable=False),
)

# Every picture at each fixed size, re-encoded: "u:<user id>" or "c:<conversation id>".
avatars = Table(
    "avatars",
    metadata,
    Column("owner", String(40), primary_key=True),
    Column("size", Integer, primary_key=True),
    Column("image", LargeBinary, nullable=False),  # JPEG, no metadata
    Column("tag", String(16), nullable=False),
)

__all__ = ["avatars", "profiles"]
