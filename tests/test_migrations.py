"""Migrations build exactly the schema the code expects, and re-running them is harmless."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from secureconnect.store import Database, metadata
from secureconnect.store.migrate import head_revision, upgrade


async def test_migrated_schema_matches_the_models(tmp_path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    try:
        await upgrade(db)

        def diff(sync_conn: Any) -> list[Any]:
            return compare_metadata(MigrationContext.configure(sync_conn), metadata)

        async with db.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await db.close()


def test_migrate_command_is_idempotent(tmp_path) -> None:
    env = {**os.environ, "SECURECONNECT_DATA_DIR": str(tmp_path)}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-m", "secureconnect", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"schema at {head_revision()}" in out
