"""A message in an adapter's mailbox, as the store gives it (:class:`Entry`) and as the API
and the webhooks show it (:class:`Message`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from backbone.store.models import MailboxMessage


@dataclass(frozen=True)
class Entry:
    """A message in the mailbox, without its bytes."""

    id: int
    kind: str
    sender: str | None
    recipient: str
    document_id: str | None
    backbone_id: str | None
    status_code: str | None
    content_sha256: str
    size: int
    received_at: datetime
    locked_until: datetime | None
    acked_at: datetime | None
    result: str | None
    reason: str | None

    @classmethod
    def of(cls, row: MailboxMessage) -> Entry:
        return cls(
            row.id,
            row.kind,
            row.sender,
            row.recipient,
            row.document_id,
            row.backbone_id,
            row.status_code,
            row.content_sha256,
            row.size,
            _aware(row.received_at),
            _aware(row.locked_until) if row.locked_until else None,
            _aware(row.acked_at) if row.acked_at else None,
            row.result,
            row.reason,
        )


class Message(BaseModel):
    """A message in the mailbox."""

    id: int
    kind: str
    sender: str | None
    recipient: str
    document_id: str | None
    backbone_id: str | None
    status_code: str | None
    content_sha256: str
    size: int
    received_at: datetime
    locked_until: datetime | None
    acknowledged_at: datetime | None
    result: str | None
    reason: str | None

    @classmethod
    def of(cls, entry: Entry) -> Message:
        return cls(
            id=entry.id,
            kind=entry.kind,
            sender=entry.sender,
            recipient=entry.recipient,
            document_id=entry.document_id,
            backbone_id=entry.backbone_id,
            status_code=entry.status_code,
            content_sha256=entry.content_sha256,
            size=entry.size,
            received_at=entry.received_at,
            locked_until=entry.locked_until,
            acknowledged_at=entry.acked_at,
            result=entry.result,
            reason=entry.reason,
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone
