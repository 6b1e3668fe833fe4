"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def upsert(
    conn: AsyncConnection,
    table: Table,
    values: dict[str, Any],
    keys: list[str],
    keep_max: list[str] | None = None,
) -> None:
    """Insert a row, or on a key conflict raise ``keep_max`` columns to the new values if larger.

    Monotonic counters (cursors, receipts) only move forward, whatever order updates arrive in.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values)
    else:  # pragma: no cover - the store only supports the two
        raise RuntimeError(f"unsupported dialect {dialect}")
    columns = keep_max or []
    if not columns:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys,
            set_={
                c: case((stmt.excluded[c] > table.c[c], stmt.excluded[c]), else_=table.c[c])
                for c in columns
            },
        )
    await conn.execute(stmt)
