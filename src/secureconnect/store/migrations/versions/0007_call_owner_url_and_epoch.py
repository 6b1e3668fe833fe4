"""call owner url, sfu epoch and roster version

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand-only: nullable or defaulted columns, added in place on SQLite and PostgreSQL.
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_url", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("sfu_epoch", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("version", sa.BigInteger(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("version")
        batch_op.drop_column("sfu_epoch")
        batch_op.drop_column("owner_url")
