"""one-time prekeys handed out per claimer, device and hour

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 20:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand-only: a new table, which older code simply does not use.
    op.create_table(
        "prekey_claims",
        sa.Column("claimer_id", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("claimer_id", "device_id", "hour", name=op.f("pk_prekey_claims")),
    )
    with op.batch_alter_table("prekey_claims", schema=None) as batch_op:
        batch_op.create_index("ix_prekey_claims_hour", ["hour"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("prekey_claims", schema=None) as batch_op:
        batch_op.drop_index("ix_prekey_claims_hour")
    op.drop_table("prekey_claims")
