"""Incident tables."""

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from secureconnect.store.base import metadata

incidents = Table(
    "incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("number", Integer, nullable=False, unique=True),  # what people say: "incident 12"
    Column("title", String(300), nullable=False),
    Column("severity", String(4), nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner", String(64), nullable=True),
    Column("users_affected", Integer, nullable=True),
    Column("recent_deploy", Boolean, nullable=True),
    Column("alert_key", String(200), nullable=True),
    Column("opened_at", BigInteger, nullable=False),
    Column("acknowledged_at", BigInteger, nullable=True),
    Column("triaged_at", BigInteger, nullable=True),
    Column("mitigated_at", BigInteger, nullable=True),
    Column("resolved_at", BigInteger, nullable=True),
    Column("verified_at", BigInteger, nullable=True),  # null when closed by override
    Column("closed_at", BigInteger, nullable=True),
    Column("last_update_at", BigInteger, nullable=False),
    Column("errors_at_resolve", BigInteger, nullable=True),
    Index("ix_incidents_alert_key", "alert_key"),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "incident_id", String(32), ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_incident_events_incident_id", "incident_id", "id"),
    sqlite_autoincrement=True,
)

# Public updates shown on the status page (runbook 23.10), with the component states they set.
status_updates = Table(
    "status_updates",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column(
        "incident_id", String(32), ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False
    ),
    Column("at", BigInteger, nullable=False),
    Column("phase", String(16), nullable=False),  # investigating|identified|monitoring|resolved
    Column("text", Text, nullable=False),
    Column("components", Text, nullable=False),  # JSON: {"Chat": "degraded", ...}
    Index("ix_status_updates_incident_id", "incident_id", "id"),
    sqlite_autoincrement=True,
)
