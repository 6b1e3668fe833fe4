"""Apply the schema migrations. Migrations are expand-then-contract (see docs/operations.md):
the previous release must keep working on a migrated schema, so ``kubectl rollout undo`` is safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from secureconnect.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    cfg = alembic_config()

    def run(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(db: Database) -> str | None:
    def read(sync_conn: Any) -> str | None:
        rev: str | None = MigrationContext.configure(sync_conn).get_current_revision()
        return rev

    async with db.engine.connect() as conn:
        return await conn.run_sync(read)


def head_revision() -> str | None:
    head: str | None = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head
