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
    await upsert_many(conn, table, [values], keys, keep_max)


async def upsert_many(
    conn: AsyncConnection,
    table: Table,
    rows: list[dict[str, Any]],
    keys: list[str],
    keep_max: list[str] | None = None,
) -> None:
    """:func:`upsert` for many rows of the same columns, in one executemany round trip."""
    if not rows:
        return
    stmt = _insert(conn, table)
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
    await conn.execute(stmt, rows)


async def put(conn: AsyncConnection, table: Table, values: dict[str, Any], keys: list[str]) -> None:
    """Insert the row, or overwrite its other columns: last writer wins, in one statement."""
    stmt = _insert(conn, table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c: stmt.excluded[c] for c in values if c not in keys}
    )
    await conn.execute(stmt)


async def bump(conn: AsyncConnection, table: Table, keys: dict[str, Any], column: str) -> None:
    """Insert the row with ``column`` = 1, or add 1 to it: one statement, safe under races."""
    stmt = _insert(conn, table).values(**keys, **{column: 1})
    stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_={column: table.c[column] + 1})
    await conn.execute(stmt)


def _insert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's own INSERT, which knows ON CONFLICT."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported dialect {dialect}")  # pragma: no cover - only the two
