"""Migrations build exactly the schema the code expects, and re-running them is harmless."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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


CONTRACTING = (
    "op.drop_",
    "op.alter_column",
    "batch_op.drop_",
    "batch_op.alter_column",
    "op.rename_table",
    "op.execute",
)


def test_every_upgrade_only_expands() -> None:
    """Expand-then-contract: an upgrade only adds (tables, nullable columns, indexes). Dropping
    or altering what the previous release reads waits for the release after, which is what keeps
    `kubectl rollout undo` safe (runbook 23.9; docs/operations.md). A contracting step must be
    listed here, with the release in which its column stopped being used."""
    allowed: dict[str, str] = {}  # "0007": "drops messages.legacy_x, unused since 0.3"
    versions = Path(__file__).parents[1] / "src/secureconnect/store/migrations/versions"
    for script in sorted(versions.glob("*.py")):
        text = script.read_text()
        upgrade = text[text.index("def upgrade") : text.index("def downgrade")]
        found = [op for op in CONTRACTING if op in upgrade]
        assert not found or script.name[:4] in allowed, f"{script.name} contracts: {found}"


async def test_the_previous_release_still_works_on_the_migrated_schema(tmp_path) -> None:
    """Release 0.1 (schema 0001) wrote and read these tables; after 0002 its statements work."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    try:
        await upgrade(db, "0001")
        await upgrade(db)  # the new release's migrations, while the old release still runs
        async with db.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO users (id, username, password_hash, created_at) "
                "VALUES ('u1', 'old', 'x', 1)"
            )
            await conn.exec_driver_sql(
                "INSERT INTO conversations (id, kind, name, direct_key, created_by, created_at, "
                "last_seq) VALUES ('c1', 'group', NULL, NULL, 'u1', 1, 0)"
            )
            rows = (
                await conn.exec_driver_sql("SELECT id, kind, last_seq FROM conversations")
            ).all()
        assert [tuple(r) for r in rows] == [("c1", "group", 0)]
    finally:
        await db.close()
