"""Lifecycle events: what the workers announce on backbone.events for the tracker.

One model per kind, each with the fields that kind has and no other, told apart by
``kind`` (a tagged union: :data:`Event`). They travel several to a message, as an
:class:`EventBatch` (``event.batch``): a worker publishes what its handlers produced while
the previous batch was being confirmed, so a busy worker sends one message for many
documents and an idle one waits for nothing. An accepted document carries the outcome of
each copy (``routed``, ``undeliverable``), one event where there were one per copy.

:func:`messages` reads a message body either way: a batch, or one event alone, as workers
before batching published them, so a tracker upgraded first records what older workers
send. A status carries its reporter as
``recipient`` and the agency its ResponseFor names as ``sender`` on the wire, under clearer
names here (schemas/asyncapi.yaml, kind by kind).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .safe import derived_id


class Kind(StrEnum):
    ACCEPTED = "accepted"  # a document passed every check (and its copies, where it says)
    ROUTED = "routed"  # one recipient's copy was published (confirmed)
    UNDELIVERABLE = "undeliverable"  # one recipient's copy matched no inbox
    REJECTED = "rejected"  # a submission failed a check; never routed
    STATUS = "status"  # a recipient (or the sender, for 13) reported a status


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    """What every event has; ``event_id`` makes recording idempotent."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, max_length=64)
    recorded_at: datetime = Field(default_factory=_now)  # as the backbone saw it
    message_id: str | None = None  # of the submission it came from

    def body(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class AcceptedEvent(_Event):
    """A document passed every check, and its copies were published: confirmed and routed
    to ``routed``, returned for ``undeliverable``. (Both empty: an event from before
    batching, whose copies follow one event each.)"""

    kind: Literal[Kind.ACCEPTED] = Kind.ACCEPTED
    backbone_id: str
    sender: str
    document_id: str
    routed: tuple[str, ...] = ()
    undeliverable: tuple[str, ...] = ()

    def copies(self) -> list[RoutedEvent | UndeliverableEvent]:
        """Each copy as the event of its own it replaces, with an id derived from this
        event's (so recording them stays idempotent; ``<event_id>:<n>``)."""
        fields = {
            "backbone_id": self.backbone_id,
            "sender": self.sender,
            "document_id": self.document_id,
            "message_id": self.message_id,
            "recorded_at": self.recorded_at,
        }
        return [
            kind(event_id=_copy_id(self.event_id, n), recipient=recipient, **fields)
            for n, (kind, recipient) in enumerate(
                [(RoutedEvent, r) for r in self.routed]
                + [(UndeliverableEvent, r) for r in self.undeliverable]
            )
        ]

    @property
    def agency(self) -> str:
        return self.sender


def _copy_id(event_id: str, n: int) -> str:
    """``<event_id>:<n>``, hashed instead where that would pass 64 characters."""
    copy = f"{event_id}:{n}"
    return copy if len(copy) <= 64 else derived_id("copy", event_id, str(n))


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
BATCH: Literal["batch"] = "batch"  # a batch message's kind, type and routing key's tail
MAX_BATCH = 500  # events per message: a few hundred KB with statuses' packages at most


class EventBatch(BaseModel):
    """Several events in one message; the tracker records them in one transaction."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["batch"] = BATCH
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)

    def body(self) -> bytes:
        events = b",".join(event.body() for event in self.events)
        return b'{"kind":"batch","events":[' + events + b"]}"


_MESSAGE: TypeAdapter[Event | EventBatch] = TypeAdapter(
    Annotated[
        AcceptedEvent | RoutedEvent | UndeliverableEvent | RejectedEvent | StatusEvent | EventBatch,
        Field(discriminator="kind"),
    ]
)


def messages(body: bytes) -> list[Event]:
    """The events in a message body (a batch, or one event alone); pydantic's
    ValidationError if it holds none."""
    parsed = _MESSAGE.validate_json(body)
    return parsed.events if isinstance(parsed, EventBatch) else [parsed]


def routing_key(event: Event | EventBatch) -> str:
    """``event.<kind>`` on backbone.events (``event.batch`` for a batch)."""
    return f"event.{BATCH if isinstance(event, EventBatch) else event.kind.value}"


__all__ = [
    "BATCH",
    "MAX_BATCH",
    "AcceptedEvent",
    "Event",
    "EventBatch",
    "Kind",
    "RejectedEvent",
    "RoutedEvent",
    "StatusEvent",
    "UndeliverableEvent",
    "messages",
    "routing_key",
]
