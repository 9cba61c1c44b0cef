"""the directory's change numbers (agencies.version, for incremental sync, taken from the
directory_version counter) and an index for a sender's feed of events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=True))
    # what exists is numbered in the order it last changed (parents first on ties)
    agencies = sa.table(
        "agencies",
        sa.column("code", sa.String),
        sa.column("level", sa.Integer),
        sa.column("updated_at", sa.DateTime),
        sa.column("version", sa.Integer),
    )
    connection = op.get_bind()
    codes = connection.execute(
        sa.select(agencies.c.code).order_by(
            agencies.c.updated_at, agencies.c.level, agencies.c.code
        )
    ).scalars()
    numbered = list(codes)
    for number, code in enumerate(numbered, start=1):
        connection.execute(agencies.update().where(agencies.c.code == code).values(version=number))
    counter = op.create_table(
        "directory_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_version")),
    )
    op.bulk_insert(counter, [{"id": 1, "value": len(numbered)}])
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.alter_column("version", existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_agencies_version"), ["version"])
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_sender_id"), ["sender", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("directory_version")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_sender_id"))
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_agencies_version"), type_="unique")
        batch_op.drop_column("version")
