"""Account tables. A login is a session bound to one device; tokens are kept only as hashes."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

from secureconnect.store.base import metadata

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # A verified address for security notices (accounts.email); none until proven by a code.
    Column("email", String(254), nullable=True),
    # Set by ``oncall compromise``: until the password changes, a login may do nothing else.
    Column("must_change_password", Boolean, nullable=False, server_default=false()),
)

devices = Table(
    "devices",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_devices_user_id", "user_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(32), ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_sessions_user_id", "user_id"),
)

# The second factor (accounts.totp). The secret is sealed with the server's key; a row without
# ``confirmed_at`` is an enrolment begun but not yet proven with a first code. ``last_step`` is
# the time step of the last code accepted: that code and older ones never work again.
totp_secrets = Table(
    "totp_secrets",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("secret_sealed", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("confirmed_at", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=False),
)

# Single-use recovery codes, as SHA-256 hashes.
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("used_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("user_id", "code_hash"),
)

# An address being proven: the code mailed to it (hashed), until when, and how many wrong tries.
email_codes = Table(
    "email_codes",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
)

# Who a compromise (``oncall compromise``, one key per scope and reason) has already dealt
# with, and whether they were mailed: running the same command twice does nothing twice.
compromised_users = Table(
    "compromised_users",
    metadata,
    Column("compromise_key", String(64), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("mailed", Boolean, nullable=False),
    PrimaryKeyConstraint("compromise_key", "user_id"),
)

# ``oncall notify-users``: who a mailing (keyed by its subject and text) went to. A row is
# written before its mail is sent and removed if the mail server refuses, so an interrupted
# mailing resumes where it stopped and never mails anyone twice.
mailing_recipients = Table(
    "mailing_recipients",
    metadata,
    Column("mailing_key", String(64), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("mailing_key", "user_id"),
)
