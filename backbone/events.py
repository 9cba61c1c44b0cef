"""Lifecycle events: what the validator announces on backbone.events for the tracker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Kind(StrEnum):
    ACCEPTED = "accepted"  # a document passed every check
    ROUTED = "routed"  # one recipient's copy was published (confirmed)
    UNDELIVERABLE = "undeliverable"  # one recipient's copy matched no inbox
    REJECTED = "rejected"  # a submission failed a check; never routed
    STATUS = "status"  # a recipient (or the sender, for 13) reported a status


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """One event; ``event_id`` makes recording idempotent."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Kind
    backbone_id: str | None = None
    sender: str | None = None
    document_id: str | None = None  # the edXML DocumentId
    recipient: str | None = None
    status_code: str | None = None
    description: str | None = None
    staff: str | None = None
    occurred_at: datetime | None = None  # as the package says
    recorded_at: datetime = Field(default_factory=_now)  # as the backbone saw it
    check: str | None = None  # for rejections: which check failed...
    code: str | None = None  # ...with which error code,
    path: str | None = None  # on which element,
    value: str | None = None  # with which value
    message_id: str | None = None
    package: str | None = None  # for statuses: the package (base64), which the tracker forwards

    @property
    def routing_key(self) -> str:
        return f"event.{self.kind.value}"

    def body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
