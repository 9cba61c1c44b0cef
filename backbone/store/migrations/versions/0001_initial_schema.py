"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 13:16:03.328320
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agencies",
        sa.Column("code", sa.String(length=13), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("parent_code", sa.String(length=13), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("root", sa.String(length=3), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_code"], ["agencies.code"], name=op.f("fk_agencies_parent_code_agencies")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_agencies")),
    )
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agencies_parent_code"), ["parent_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_agencies_root_level"), ["root", "level"], unique=False)

    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("sender", sa.String(length=13), nullable=False),
        sa.Column("document_id", sa.String(length=255), nullable=False),
        sa.Column("bussiness_doc_type", sa.Integer(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("code_number", sa.String(length=255), nullable=True),
        sa.Column("code_notation", sa.String(length=255), nullable=True),
        sa.Column("promulgation_date", sa.Date(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("rejection_code", sa.String(length=40), nullable=True),
        sa.Column("rejection_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint("sender", "document_id", name=op.f("uq_documents_sender_document_id")),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_documents_accepted_at"), ["accepted_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_documents_state_submitted_at"), ["state", "submitted_at"], unique=False
        )

    op.create_table(
        "principals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_principals")),
        sa.UniqueConstraint("username", name=op.f("uq_principals_username")),
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agency_code", sa.String(length=13), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agency_code"], ["agencies.code"], name=op.f("fk_certificates_agency_code_agencies")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_certificates_fingerprint")),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_certificates_agency_code"), ["agency_code"], unique=False
        )

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_pk", sa.String(length=36), nullable=False),
        sa.Column("recipient", sa.String(length=13), nullable=False),
        sa.Column("transport_state", sa.String(length=14), nullable=False),
        sa.Column("status_code", sa.String(length=2), nullable=True),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processing_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recall_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recall_agreed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recall_refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_pk"], ["documents.id"], name=op.f("fk_deliveries_document_pk_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "document_pk", "recipient", name=op.f("uq_deliveries_document_pk_recipient")
        ),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_recipient_status_code"),
            ["recipient", "status_code"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_status_code_updated_at"),
            ["status_code", "updated_at"],
            unique=False,
        )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("document_pk", sa.String(length=36), nullable=True),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("edxml_document_id", sa.String(length=255), nullable=True),
        sa.Column("recipient", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("status_code", sa.String(length=2), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("staff", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_pk"], ["documents.id"], name=op.f("fk_events_document_pk_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_document_pk_recipient"),
            ["document_pk", "recipient"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_events_kind_recorded_at"), ["kind", "recorded_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_events_recipient_status_code"),
            ["recipient", "status_code"],
            unique=False,
        )

    op.create_table(
        "principal_scopes",
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(length=60), nullable=False),
        sa.ForeignKeyConstraint(
            ["principal_id"],
            ["principals.id"],
            name=op.f("fk_principal_scopes_principal_id_principals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("principal_id", "pattern", name=op.f("pk_principal_scopes")),
    )


def downgrade() -> None:
    op.drop_table("principal_scopes")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_recipient_status_code"))
        batch_op.drop_index(batch_op.f("ix_events_kind_recorded_at"))
        batch_op.drop_index(batch_op.f("ix_events_document_pk_recipient"))

    op.drop_table("events")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_status_code_updated_at"))
        batch_op.drop_index(batch_op.f("ix_deliveries_recipient_status_code"))

    op.drop_table("deliveries")
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificates_agency_code"))

    op.drop_table("certificates")
    op.drop_table("principals")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_state_submitted_at"))
        batch_op.drop_index(batch_op.f("ix_documents_accepted_at"))

    op.drop_table("documents")
    with op.batch_alter_table("agencies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agencies_root_level"))
        batch_op.drop_index(batch_op.f("ix_agencies_parent_code"))

    op.drop_table("agencies")
