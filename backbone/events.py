"""Lifecycle events: what the workers announce on backbone.events for the tracker.

One model per kind, each with the fields that kind has and no other, told apart by
``kind`` (a tagged union: :data:`Event`, read by :func:`parse`). The JSON on the wire is
the same as before the kinds were typed (schemas/asyncapi.yaml, kind by kind): a status
still carries its reporter as ``recipient`` and the agency its ResponseFor names as
``sender``, under clearer names here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Kind(StrEnum):
    ACCEPTED = "accepted"  # a document passed every check
    ROUTED = "routed"  # one recipient's copy was published (confirmed)
    UNDELIVERABLE = "undeliverable"  # one recipient's copy matched no inbox
    REJECTED = "rejected"  # a submission failed a check; never routed
    STATUS = "status"  # a recipient (or the sender, for 13) reported a status


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    """What every event has; ``event_id`` makes recording idempotent."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    recorded_at: datetime = Field(default_factory=_now)  # as the backbone saw it
    message_id: str | None = None  # of the submission it came from

    def body(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class AcceptedEvent(_Event):
    """A document passed every check; its copies follow, one event each."""

    kind: Literal[Kind.ACCEPTED] = Kind.ACCEPTED
    backbone_id: str
    sender: str
    document_id: str

    @property
    def agency(self) -> str:
        return self.sender


class RoutedEvent(_Event):
    """One recipient's copy was published and confirmed."""

    kind: Literal[Kind.ROUTED] = Kind.ROUTED
    backbone_id: str
    sender: str
    document_id: str
    recipient: str

    @property
    def agency(self) -> str:
        return self.recipient


class UndeliverableEvent(_Event):
    """One recipient's copy matched no queue (returned, or taken by the alternate exchange)."""

    kind: Literal[Kind.UNDELIVERABLE] = Kind.UNDELIVERABLE
    backbone_id: str
    sender: str
    document_id: str | None = None
    recipient: str
    description: str | None = None

    @property
    def agency(self) -> str:
        return self.recipient


class RejectedEvent(_Event):
    """A submission failed a check (which, with which code, on which element and value)."""

    kind: Literal[Kind.REJECTED] = Kind.REJECTED
    sender: str
    document_id: str | None = None  # unknown when refused before the parse
    check: str
    code: str
    path: str
    value: str | None = None
    description: str

    @property
    def agency(self) -> str:
        return self.sender


class StatusEvent(_Event):
    """A status package accepted by the validator, for the tracker to check and forward.

    ``reporter`` is its From; ``addressee`` the agency its ResponseFor names: the document's
    sender for an ordinary status, the recipient a recall (13) is for when the sender
    reports it. ``package`` is the status package itself (base64), which the tracker
    forwards unchanged.
    """

    kind: Literal[Kind.STATUS] = Kind.STATUS
    reporter: str = Field(alias="recipient")
    addressee: str = Field(alias="sender")
    document_id: str
    status_code: str
    description: str | None = None
    staff: str | None = None
    occurred_at: datetime | None = None  # as the package says
    package: str

    @property
    def agency(self) -> str:
        return self.reporter


Event = Annotated[
    AcceptedEvent | RoutedEvent | UndeliverableEvent | RejectedEvent | StatusEvent,
    Field(discriminator="kind"),
]
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


def parse(body: bytes) -> Event:
    """The event in a message body; pydantic's ValidationError if it is none."""
    return _EVENT.validate_json(body)


def routing_key(event: Event) -> str:
    """``event.<kind>`` on backbone.events."""
    return f"event.{event.kind.value}"


__all__ = [
    "AcceptedEvent",
    "Event",
    "Kind",
    "RejectedEvent",
    "RoutedEvent",
    "StatusEvent",
    "UndeliverableEvent",
    "parse",
    "routing_key",
]
