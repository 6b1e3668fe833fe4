"""message requests: a membership someone else asked for, and who blocks whom

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 14:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Expand-only: a nullable column and a new table; older code ignores both.
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_by", sa.String(length=32), nullable=True))
    op.create_table(
        "user_blocks",
        sa.Column("blocker_id", sa.String(length=32), nullable=False),
        sa.Column("blocked_id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blocker_id"],
            ["users.id"],
            name=op.f("fk_user_blocks_blocker_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["blocked_id"],
            ["users.id"],
            name=op.f("fk_user_blocks_blocked_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id", name=op.f("pk_user_blocks")),
    )


def downgrade() -> None:
    op.drop_table("user_blocks")
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_column("requested_by")
