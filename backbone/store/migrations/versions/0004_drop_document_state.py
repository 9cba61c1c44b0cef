"""drop the documents' state and rejection columns: a document row is an acceptance
(rejections are events), so nothing ever wrote or read them but the constant "accepted"

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_state_submitted_at"))
        batch_op.drop_column("rejection_reason")
        batch_op.drop_column("rejection_code")
        batch_op.drop_column("state")


def downgrade() -> None:
    # every row there is an accepted document: the server default fills the old column
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=12), nullable=False, server_default="accepted")
        )
        batch_op.add_column(sa.Column("rejection_code", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("rejection_reason", sa.Text(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_documents_state_submitted_at"), ["state", "submitted_at"], unique=False
        )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.alter_column("state", server_default=None)
