"""Key directory and inbox tables. Only public keys and ciphertext are ever stored here."""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
)

from secureconnect.store.base import metadata

device_keys = Table(
    "device_keys",
    metadata,
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("identity_key", LargeBinary, nullable=False),  # X25519, 32 bytes
    Column("signing_key", LargeBinary, nullable=False),  # Ed25519, 32 bytes
    Column("identity_sig", LargeBinary, nullable=False),
    Column("spk_id", BigInteger, nullable=False),
    Column("spk", LargeBinary, nullable=False),
    Column("spk_sig", LargeBinary, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_device_keys_user_id", "user_id"),
)

one_time_prekeys = Table(
    "one_time_prekeys",
    metadata,
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("key_id", BigInteger, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
)

# One-time prekeys handed out, per claiming user, device and hour: past a small allowance a
# claimer gets bundles without one (X3DH then uses the signed prekey alone, as when the stock
# is empty), so that nobody can empty another device's stock by claiming it over and over.
prekey_claims = Table(
    "prekey_claims",
    metadata,
    Column("claimer_id", String(32), nullable=False),
    Column("device_id", String(32), nullable=False),
    Column("hour", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("claimer_id", "device_id", "hour"),
    Index("ix_prekey_claims_hour", "hour"),
)

inbox = Table(
    "inbox",
    metadata,
    # INTEGER on SQLite so that it is the rowid and increments by itself.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("sender_user_id", String(32), nullable=False),
    Column("sender_device_id", String(32), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_inbox_device_id_id", "device_id", "id"),
    # Ids must never be reused after acknowledged rows are deleted: connections skip ids they
    # have already delivered. SQLite reuses rowids unless told AUTOINCREMENT.
    sqlite_autoincrement=True,
)
