"""access changes: the record of who was given or lost broker access

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_changes")),
    )
    with op.batch_alter_table("access_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_access_changes_principal_at"), ["principal", "at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("access_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_access_changes_principal_at"))
    op.drop_table("access_changes")
