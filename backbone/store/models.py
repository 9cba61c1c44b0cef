"""The backbone's tables, as SQLAlchemy 2 models. Alembic migrations mirror them exactly.

Identifiers are kept as text (``000.00.15.H41``); every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

CODE = String(13)  # LLL.KK.MM.XNN

# Stable constraint names, so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


class Agency(Base):
    """A sender or recipient of documents: a ministry, province, district, commune."""

    __tablename__ = "agencies"

    code: Mapped[str] = mapped_column(CODE, primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    parent_code: Mapped[str | None] = mapped_column(CODE, ForeignKey("agencies.code"))
    level: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(3))  # the level-1 part, XNN
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # the directory's change counter: every insert or change takes the next one, so a
    # system that synced up to version N asks for what is above N (removed ones included)
    version: Mapped[int] = mapped_column(Integer, unique=True)

    certificates: Mapped[list[Certificate]] = relationship(back_populates="agency")

    __table_args__ = (
        Index(None, "parent_code"),
        Index(None, "root", "level"),
    )


class DirectoryVersion(Base):
    """The directory's change counter, one row: a writer takes its numbers by updating it,
    so concurrent writers wait for each other and numbers follow the order of commits."""

    __tablename__ = "directory_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class Principal(Base):
    """A broker user: an agency's own system, or a provincial gateway serving a pattern."""

    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # agency | gateway
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    scopes: Mapped[list[PrincipalScope]] = relationship(
        back_populates="principal", cascade="all, delete-orphan", lazy="selectin"
    )


class AccessChange(Base):
    """A change of someone's access to the broker, for the record: provisioned, password
    rotated, revoked. Kept after the principal is gone."""

    __tablename__ = "access_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))  # provisioned | rotated | revoked | ...
    detail: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))  # who ran the command
    at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index(None, "principal", "at"),)


class PrincipalScope(Base):
    """One topic pattern of agencies a principal may act for (an exact code, or ``*.*.*.H41``)."""

    __tablename__ = "principal_scopes"

    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True
    )
    pattern: Mapped[str] = mapped_column(String(60), primary_key=True)

    principal: Mapped[Principal] = relationship(back_populates="scopes")


class Certificate(Base):
    """A certificate registered for an agency; several at once during a rotation."""

    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agency_code: Mapped[str] = mapped_column(CODE, ForeignKey("agencies.code"))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256, hex
    subject: Mapped[str] = mapped_column(String(1000))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    agency: Mapped[Agency] = relationship(back_populates="certificates")

    __table_args__ = (Index(None, "agency_code"),)


class Document(Base):
    """A package the backbone accepted: one row per (sender, DocumentId)."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    sender: Mapped[str] = mapped_column(CODE)
    document_id: Mapped[str] = mapped_column(String(255))  # the edXML DocumentId
    bussiness_doc_type: Mapped[int | None] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(Text)
    code_number: Mapped[str | None] = mapped_column(String(255))
    code_notation: Mapped[str | None] = mapped_column(String(255))
    promulgation_date: Mapped[date | None] = mapped_column(Date)
    priority: Mapped[int | None] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[datetime] = mapped_column(default=utcnow)
    accepted_at: Mapped[datetime | None]

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="document")

    __table_args__ = (
        UniqueConstraint("sender", "document_id"),
        Index(None, "accepted_at"),
        Index(None, "promulgation_date"),
    )


class Delivery(Base):
    """One document to one recipient: transport, current status, and when each status came."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_pk: Mapped[str] = mapped_column(ForeignKey("documents.id"))
    recipient: Mapped[str] = mapped_column(CODE)
    transport_state: Mapped[str] = mapped_column(String(14))  # routed | undeliverable
    status_code: Mapped[str | None] = mapped_column(String(2))
    routed_at: Mapped[datetime | None]
    arrived_at: Mapped[datetime | None]  # 01
    refused_at: Mapped[datetime | None]  # 02
    accepted_at: Mapped[datetime | None]  # 03
    assigned_at: Mapped[datetime | None]  # 04
    processing_at: Mapped[datetime | None]  # 05
    done_at: Mapped[datetime | None]  # 06
    recall_requested_at: Mapped[datetime | None]  # 13
    recall_agreed_at: Mapped[datetime | None]  # 15
    recall_refused_at: Mapped[datetime | None]  # 16
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    document: Mapped[Document] = relationship(back_populates="deliveries")

    __table_args__ = (
        UniqueConstraint("document_pk", "recipient"),
        Index(None, "recipient", "status_code"),
        Index(None, "status_code", "updated_at"),
    )


class EventRecord(Base):
    """Everything that happened, as the tracker recorded it; idempotent by ``event_id``.
    One row per :class:`backbone.events.Event`, the message the workers publish."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    document_pk: Mapped[str | None] = mapped_column(ForeignKey("documents.id"))
    sender: Mapped[str | None] = mapped_column(String(255))
    edxml_document_id: Mapped[str | None] = mapped_column(String(255))
    recipient: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(40))
    status_code: Mapped[str | None] = mapped_column(String(2))
    reason_code: Mapped[str | None] = mapped_column(String(40))  # rejections: why
    description: Mapped[str | None] = mapped_column(Text)
    staff: Mapped[str | None] = mapped_column(String(500))
    occurred_at: Mapped[datetime | None]
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index(None, "document_pk", "recipient"),
        Index(None, "kind", "recorded_at"),
        Index(None, "sender", "id"),  # a sender's feed, read with a cursor
        Index(None, "recipient", "status_code"),
    )


# --- the HTTP adapter's (adapters/http) -------------------------------------------------------


class AdapterCredential(Base):
    """A document-management system's credential: its id, the agencies it acts for, and its
    HMAC secret encrypted with the adapter's key (a secret that signs cannot be hashed)."""

    __tablename__ = "adapter_credentials"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agencies: Mapped[str] = mapped_column(Text)  # exact codes, comma-separated
    secret: Mapped[str] = mapped_column(Text)  # Fernet token of the secret
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class MailboxMessage(Base):
    """What the adapter took from the broker for an agency, kept until its system has
    acknowledged it: a delivered document or a status, its bytes as they came. ``id`` is
    the cursor of listings; ``message_id`` (the backbone's, stable across redeliveries)
    keeps a message the broker gave twice to one row."""

    __tablename__ = "mailbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str] = mapped_column(String(300), unique=True)
    recipient: Mapped[str] = mapped_column(CODE)
    kind: Mapped[str] = mapped_column(String(10))  # edoc | status
    sender: Mapped[str | None] = mapped_column(CODE)
    document_id: Mapped[str | None] = mapped_column(String(255))
    backbone_id: Mapped[str | None] = mapped_column(String(36))
    status_code: Mapped[str | None] = mapped_column(String(2))
    content_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]
    lock_token: Mapped[str | None] = mapped_column(String(36))
    acked_at: Mapped[datetime | None]
    result: Mapped[str | None] = mapped_column(String(10))  # done | fail
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "recipient", "acked_at", "id"),)


class IdempotentAnswer(Base):
    """The first answer to a send with an ``Idempotency-Key``, returned to its retries."""

    __tablename__ = "idempotent_answers"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """A URL a credential's system is called at when a message reaches its mailbox; each
    call is signed with the webhook's own secret (sealed like the credentials')."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key_id: Mapped[str] = mapped_column(ForeignKey("adapter_credentials.key_id"))
    url: Mapped[str] = mapped_column(String(2000))
    kinds: Mapped[str] = mapped_column(String(20))  # edoc,status
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (Index(None, "key_id"),)


class WebhookCall(Base):
    """One call owed to a webhook, written with the mailbox row it announces (so none is
    lost), retried with back-off until the target answers 2xx."""

    __tablename__ = "webhook_calls"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"))
    message_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "delivered_at", "due_at"),)
