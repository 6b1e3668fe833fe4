"""The shared table registry and the portable column conventions every domain uses."""

from __future__ import annotations

import secrets

from sqlalchemy import MetaData

# Named constraints so that Alembic migrations are identical on SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def new_id() -> str:
    """A random identifier that reveals neither creation order nor count."""
    return secrets.token_hex(16)
