"""Deploy history: each process records its start, so "was there a deploy in the last hour?"
(runbook 23.4, 23.9) has an answer on every target, Kubernetes or not."""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table

from secureconnect.store.base import metadata

deploys = Table(
    "deploys",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("role", String(32), nullable=False),
    Column("version", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Index("ix_deploys_started_at", "started_at"),
    sqlite_autoincrement=True,
)
