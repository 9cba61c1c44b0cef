"""A message in an adapter's mailbox as the API and the webhooks show it: the row's
metadata, never its bytes."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from backbone.store.models import MailboxMessage


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
    def of(cls, row: MailboxMessage) -> Message:
        return cls(
            id=row.id,
            kind=row.kind,
            sender=row.sender,
            recipient=row.recipient,
            document_id=row.document_id,
            backbone_id=row.backbone_id,
            status_code=row.status_code,
            content_sha256=row.content_sha256,
            size=row.size,
            received_at=aware(row.received_at),
            locked_until=aware(row.locked_until),
            acknowledged_at=aware(row.acked_at),
            result=row.result,
            reason=row.reason,
        )


def aware(moment: datetime | None) -> datetime | None:
    """As stored, in UTC (SQLite drops the zone)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
