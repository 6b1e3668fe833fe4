"""Guard tables. Blocks are lifted, never deleted, so the deny list keeps its own history."""

from sqlalchemy import BigInteger, Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from secureconnect.store.base import metadata

blocked_networks = Table(
    "blocked_networks",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("network", String(64), nullable=False),  # normalised CIDR: 203.0.113.7/32
    Column("reason", Text, nullable=False),
    Column("blocked_by", String(64), nullable=False),
    Column("blocked_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("lifted_at", BigInteger, nullable=True),
    Column("lifted_by", String(64), nullable=True),
    Index("ix_blocked_networks_network", "network"),
    sqlite_autoincrement=True,
)

# One row per switch; today only "rate_limit" (normal | emergency).
edge_switches = Table(
    "edge_switches",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(32), nullable=False),
    Column("set_by", String(64), nullable=False),
    Column("set_at", BigInteger, nullable=False),
)

# Failed logins counted per client address and minute: bounded by addresses x minutes, and
# enough to answer "who is guessing passwords, and how fast" without a log search.
login_failures = Table(
    "login_failures",
    metadata,
    Column("ip", String(64), nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    PrimaryKeyConstraint("ip", "minute"),
    Index("ix_login_failures_minute", "minute"),
)
