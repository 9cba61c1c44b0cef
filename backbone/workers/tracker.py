"""The tracker: the one writer of lifecycle state, fed by backbone.events.

Events arrive several to a message (:class:`~backbone.events.EventBatch`, or one alone
from older workers), are recorded in batches, one transaction each, idempotently by event
id, and a message is acked once all its events are committed (acks coalesced by the
Worker's :class:`~backbone.broker.acks.Acks`). Statuses are checked (the reporter received
the document, or sent it, for a recall), applied by the rules of :mod:`backbone.lifecycle`,
and forwarded: to the original sender, or for a recall to the recipients. A status whose
document or routing the tracker has not seen yet is retried a few times before it is
judged. If the database goes away, the same batch is retried with a growing pause:
nothing acked is lost or reordered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .. import events, lifecycle
from ..broker import topology
from ..broker.transport import Connection, Incoming, Transport
from ..config import Settings
from ..edxml.paths import SENDER
from ..errors import BrokerError, ErrorCode, Issue
from ..events import (
    AcceptedEvent,
    Event,
    Kind,
    RejectedEvent,
    RoutedEvent,
    StatusEvent,
    UndeliverableEvent,
)
from ..safe import derived_id, printable
from ..store import Store
from ..store import tracking as queries
from ..store.models import Delivery, Document
from .publisher import Signer, load_signer
from .worker import TRANSIENT, Worker

DEFERRALS = (0.2, 0.5, 1.0, 2.0)  # waits for a status whose routing is not recorded yet
DATABASE_PAUSES = (0.5, 1.0, 2.0, 4.0)  # then every 4 s until the database answers
BROKER_RETRIES = 5  # a forward the broker keeps refusing then fails its batch (quarantine)
# what the database refuses for the rows themselves: waiting would not help, and each retry
# would publish the batch's forwards again (they go before the writes)
REFUSED_WRITES = (IntegrityError, DataError)
PREFETCH = 1000  # events in flight: a batch's worth (statuses carry their package)


@dataclass(eq=False)
class _Held:
    """A message received, and how many of its events are still to be recorded."""

    message: Incoming
    open: int
    rejected: bool = False  # quarantined: settled, never acked


@dataclass(eq=False)
class _Item:
    held: _Held
    event: Event
    attempts: int = 0


@dataclass
class _Outgoing:
    """A forward or a rejection, published before the batch commits (at least once)."""

    forwards: list[tuple[bytes, str, dict[str, str | None], str]] = field(default_factory=list)
    rejections: list[tuple[str, str, Issue, str | None]] = field(default_factory=list)
    # package times of the statuses applied in this batch (not inserted until its end)
    issued: dict[tuple[str, str, str], datetime | None] = field(default_factory=dict)


class Tracker(Worker):
    """The one writer of lifecycle state: consumes ``backbone.tracker`` in batches.

    Deliveries are buffered by ``handle`` and recorded by one loop, a batch per
    transaction; the worker's byte budget pauses the consumer while too many event bytes
    are held unacked.
    """

    queue = topology.TRACKER
    name = "tracker"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer | None = None,
        *,
        transport: Transport | None = None,
        batch: int = 1000,
        prefetch: int = PREFETCH,
    ) -> None:
        super().__init__(settings, signer, transport=transport, prefetch=prefetch, stores=[store])
        self.store = store
        self.batch = batch
        self._pending: deque[_Item] = deque()
        self._arrived = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.deferrals: tuple[float, ...] = DEFERRALS  # seconds between a status's tries

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: Transport | None = None, prefetch: int = PREFETCH
    ) -> Tracker:
        """A tracker wired from settings; it owns its store."""
        return cls(
            settings,
            Store(settings.database_url),
            load_signer(settings),
            transport=transport,
            prefetch=prefetch,
        )

    async def started(self, connection: Connection) -> None:
        await super().started(connection)
        self._loop = asyncio.create_task(self._record_loop())

    async def stopping(self) -> None:
        """Record what was received, then return (what still waits for its routing stays
        unacked, and is redelivered at the next start)."""
        self._arrived.set()  # stop_consuming() came first: the loop ends once it is empty
        if self._loop is not None:
            await self._loop

    async def _record_loop(self) -> None:
        """Batches until stopped; a fault it cannot wait out fails the worker, so that the
        tracker never looks alive while it records nothing."""
        try:
            while not (self._closing and not self._pending):
                items = await self._take()
                if items:
                    await self._record_isolated(items)
                    await self.within_budget()  # handle() only buffered: they settle here
        except Exception as exc:
            self.fail(exc)

    async def handle(self, message: Incoming) -> None:
        try:
            batch = events.messages(message.body)
        except ValidationError as exc:
            self.log.error(
                "not an event; quarantined",
                error=str(exc)[:300],
                message_id=printable(message.message_id),
            )
            await self.quarantine(message)
            return
        held = _Held(message, len(batch))
        for event in batch:
            self._add(_Item(held, event))

    def _add(self, item: _Item) -> None:
        self._pending.append(item)
        self._arrived.set()

    async def _take(self) -> list[_Item]:
        """Up to ``batch`` items: what is there, after waiting a moment for the first. (A
        deque and an event: ``wait_for(queue.get())`` can lose an item on a timeout.)"""
        if not self._pending:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=0.2)
        items: list[_Item] = []
        while self._pending and len(items) < self.batch:
            items.append(self._pending.popleft())
        return items

    async def _record_isolated(self, items: list[_Item]) -> None:
        """Record a batch; if it fails unexpectedly, record its items one by one, and
        quarantine the one that fails alone: one bad event never stops the tracker."""
        try:
            await self._record(items)
            return
        except Exception as exc:  # a bug or a hostile value: find the culprit
            self.log.error("a batch failed; recording its events one by one", error=repr(exc)[:300])
        for item in items:
            try:
                await self._record([item])
            except Exception as exc:
                self.log.error(
                    "an event could not be recorded; quarantined",
                    error=repr(exc)[:300],
                    event_id=printable(item.event.event_id, 64),
                    document_id=printable(item.event.document_id),
                    agency=printable(item.event.agency, 20),
                    exc_info=True,
                )
                held = item.held
                if not held.rejected:  # the whole message, its other events with it
                    held.rejected = True
                    await self.quarantine(held.message)
                await self._finished([item])

    async def _record(self, items: list[_Item]) -> None:
        """Record and forward a batch; a database outage is waited out, a broker fault
        (a publish not confirmed) retried BROKER_RETRIES times before the batch fails."""
        pauses = iter(DATABASE_PAUSES)
        broker_faults = 0
        while True:
            try:
                async with self.store.transaction() as session:
                    with session.no_autoflush:  # reads only: SQLite's write lock not taken
                        deferred, outgoing, rows = await self._apply(session, items)
                    await self._publish(outgoing)  # before the commit: at least once
                    await queries.add_events(session, rows)  # the writes, then the commit
                break
            except TRANSIENT as exc:
                if isinstance(exc, REFUSED_WRITES):  # not an outage: this batch's own fault
                    raise
                if isinstance(exc, BrokerError):
                    broker_faults += 1
                    if broker_faults > BROKER_RETRIES:
                        raise
                pause = next(pauses, DATABASE_PAUSES[-1])
                self.log.warning(
                    "database or broker unavailable; retrying the batch",
                    error=repr(exc)[:300],
                    events=len(items),
                    pause=pause,
                )
                await asyncio.sleep(pause)
        loop = asyncio.get_running_loop()
        waiting = {id(d) for d in deferred}
        for item in deferred:
            item.attempts += 1
            loop.call_later(self.deferrals[item.attempts - 1], self._add, item)
        await self._finished([item for item in items if id(item) not in waiting])

    async def _finished(self, items: list[_Item]) -> None:
        """These events are recorded (or quarantined): ack each message all of whose
        events are, with the earlier ones where the order allows."""
        complete = []
        for item in items:
            held = item.held
            held.open -= 1
            if held.open == 0 and not held.rejected:
                complete.append(held.message)
        if complete:
            await self.acks.done(*complete)

    def _may_wait(self, item: _Item) -> bool:
        """May this status wait for its routing once more, or is it judged now?"""
        return item.attempts < len(self.deferrals)

    async def _publish(self, outgoing: _Outgoing) -> None:
        """All at once: the broker's confirms come back pipelined."""
        await asyncio.gather(
            *(
                self.publisher.deliver(body, to, headers, message_id, "status")
                for body, to, headers, message_id in outgoing.forwards
            ),
            *(
                self.publisher.reject(to, document_id, "tracker", issue, rejected_id)
                for to, document_id, issue, rejected_id in outgoing.rejections
            ),
        )

    async def _apply(
        self, session: AsyncSession, items: list[_Item]
    ) -> tuple[list[_Item], _Outgoing, list[dict[str, object]]]:
        """Judge a batch, writing nothing yet: the changes wait in the session (new
        deliveries pending, known ones modified), so that a SQLite write lock is held only
        from the flush to the commit, never while the forwards await their confirms.
        Return the items to try again later, what to publish and the event rows."""
        known = await queries.known_events(session, [i.event.event_id for i in items])
        fresh = []
        for item in items:
            if item.event.event_id not in known:
                known.add(item.event.event_id)
                fresh.append(item)
        documents = await _documents(session, [i.event for i in fresh])
        pks = {d.id for d in documents.values()}
        deliveries = await queries.deliveries(session, pks)
        deferred: list[_Item] = []
        outgoing = _Outgoing()
        rows: list[dict[str, object]] = []
        # Transport first (routing precedes any status about it), new deliveries in bulk.
        created: dict[tuple[str, str], dict[str, object]] = {}
        for item in fresh:
            if isinstance(item.event, StatusEvent):
                continue
            for event in _with_copies(item.event):
                rows.append(_row(event, _backbone_id(event), event.kind.value))
                if isinstance(event, RoutedEvent | UndeliverableEvent):
                    _transport(deliveries, created, event)
        for key, values in created.items():
            deliveries[key] = delivery = Delivery(**values)
            session.add(delivery)
        for item in fresh:
            if not isinstance(item.event, StatusEvent):
                continue
            row = await self._status(session, item, item.event, documents, deliveries, outgoing)
            if row is None:
                deferred.append(item)
            else:
                rows.append(row)
        return deferred, outgoing, rows

    async def _status(
        self,
        session: AsyncSession,
        item: _Item,
        event: StatusEvent,
        documents: dict[tuple[str, str], Document],
        deliveries: dict[tuple[str, str], Delivery],
        outgoing: _Outgoing,
    ) -> dict[str, object] | None:
        """Check, apply and forward one status; None to wait for its routing a little more."""
        reporter, code = event.reporter, event.status_code
        recall = code == lifecycle.RECALL
        document = documents.get((reporter if recall else event.addressee, event.document_id))
        if document is None:
            if self._may_wait(item):
                return None
            return self._refuse(
                event,
                None,
                f"the backbone routed no such document from {event.addressee} to this agency",
                outgoing,
            )
        if recall:
            targets = [
                d
                for (pk, r), d in deliveries.items()
                if pk == document.id and event.addressee in (reporter, r)
            ]
            if not targets:
                if self._may_wait(item):
                    return None
                return self._refuse(
                    event, document.id, "a recall names no recipient of the document", outgoing
                )
            for target in targets:
                _stamp(target, code, event)
                outgoing.forwards.append(_forward(event, target.recipient, document))
            return _row(event, document.id, Kind.STATUS.value)
        delivery = deliveries.get((document.id, reporter))
        if delivery is None:
            if self._may_wait(item):
                return None
            return self._refuse(
                event,
                document.id,
                "this agency is neither the sender nor a recipient of the document",
                outgoing,
            )
        recall_open = delivery.recall_requested_at is not None and (
            delivery.recall_agreed_at is None and delivery.recall_refused_at is None
        )
        after_final = await _after_final(session, delivery, event, outgoing.issued)
        verdict = lifecycle.judge(delivery.status_code, code, recall_open, after_final)
        if verdict.anomaly is not None:
            return _row(event, document.id, "anomaly") | {"description": verdict.anomaly}
        delivery.status_code = verdict.current
        outgoing.issued.setdefault(
            (delivery.document_pk, delivery.recipient, code), event.occurred_at
        )
        _stamp(delivery, code, event)
        outgoing.forwards.append(_forward(event, document.sender, document))
        return _row(event, document.id, Kind.STATUS.value)

    def _refuse(
        self, event: StatusEvent, document_pk: str | None, why: str, outgoing: _Outgoing
    ) -> dict[str, object]:
        reporter = event.reporter
        issue = Issue.of(
            ErrorCode.STATUS_REFUSED,
            SENDER,
            f"status {event.status_code} refused: {why}",
            reporter,
        )
        outgoing.rejections.append((reporter, event.document_id, issue, event.message_id))
        return _row(event, document_pk, "anomaly") | {
            "description": f"refused: {why}",
            "reason_code": issue.code,
        }


async def _after_final(
    session: AsyncSession,
    delivery: Delivery,
    event: StatusEvent,
    issued: dict[tuple[str, str, str], datetime | None],
) -> bool:
    """Was this status issued after the final status the delivery reached? (Ties: no.)"""
    if delivery.status_code not in lifecycle.FINAL or event.occurred_at is None:
        return True
    key = (delivery.document_pk, delivery.recipient, delivery.status_code)
    if key in issued:
        final_at = issued[key]
    else:
        final_at = await queries.first_status_at(session, delivery, delivery.status_code)
    return final_at is None or event.occurred_at > final_at


def _with_copies(event: Event) -> list[Event]:
    """An accepted document and its copies, each recorded as the event of its own it was
    before events were batched."""
    return [event, *event.copies()] if isinstance(event, AcceptedEvent) else [event]


def _row(event: Event, document_pk: str | None, kind: str) -> dict[str, object]:
    """The events row of an event (a dict: the batch is inserted in one statement). A
    status keeps the wire's roles: its addressee as sender, its reporter as recipient."""
    row: dict[str, object] = {
        "event_id": event.event_id,
        "document_pk": document_pk,
        "edxml_document_id": event.document_id,
        "kind": kind,
        "recorded_at": event.recorded_at,
        "sender": None,
        "recipient": None,
        "status_code": None,
        "description": None,
        "staff": None,
        "occurred_at": None,
        "reason_code": None,
    }
    match event:
        case StatusEvent():
            row.update(
                sender=event.addressee,
                recipient=event.reporter,
                status_code=event.status_code,
                description=event.description,
                staff=event.staff,
                occurred_at=event.occurred_at,
            )
        case RejectedEvent():
            row.update(
                sender=event.sender,
                edxml_document_id=_findable_id(event),
                description=f"[{event.check}] [{event.code}] {event.path}: {event.description}",
                reason_code=event.code,
            )
        case UndeliverableEvent():
            row.update(
                sender=event.sender, recipient=event.recipient, description=event.description
            )
        case RoutedEvent():
            row.update(sender=event.sender, recipient=event.recipient)
        case _:
            row.update(sender=event.sender)
    return row


def _findable_id(event: RejectedEvent) -> str | None:
    """A rejection refused before its DocumentId was read is findable by its message id."""
    if not event.document_id and event.message_id:
        return f"message:{printable(event.message_id, 200)}"
    return event.document_id


def _stamp(delivery: Delivery, code: str, event: StatusEvent) -> None:
    column = lifecycle.COLUMN.get(code)
    if column is not None and getattr(delivery, column) is None:
        setattr(delivery, column, event.recorded_at)
    delivery.updated_at = datetime.now(UTC)


def _forward(
    event: StatusEvent, to: str, document: Document
) -> tuple[bytes, str, dict[str, str | None], str]:
    headers: dict[str, str | None] = {
        "x-backbone-id": document.id,
        "x-sender": event.reporter,
        "x-edxml-document-id": event.document_id,
        "x-status-code": event.status_code,
        "x-accepted-at": event.recorded_at.isoformat(),
    }
    body = base64.b64decode(event.package)
    return body, to, headers, derived_id("status", event.event_id, to)


def _transport(
    deliveries: dict[tuple[str, str], Delivery],
    created: dict[tuple[str, str], dict[str, object]],
    event: RoutedEvent | UndeliverableEvent,
) -> None:
    """Record routing on a known delivery, or on the row to create for a new one."""
    key = (event.backbone_id, event.recipient)
    now = datetime.now(UTC)
    routed_at = event.recorded_at if isinstance(event, RoutedEvent) else None
    delivery = deliveries.get(key)
    # a copy the alternate exchange took is reported undeliverable after the validator's
    # confirm said routed: undeliverable wins, whatever the order of the two events
    if delivery is not None:
        if delivery.transport_state != Kind.UNDELIVERABLE.value:
            delivery.transport_state = event.kind.value
        delivery.routed_at = delivery.routed_at or routed_at
        delivery.updated_at = now
        return
    row = created.setdefault(key, {"document_pk": key[0], "recipient": key[1], "routed_at": None})
    state = row.get("transport_state")
    row.update(
        transport_state=state if state == Kind.UNDELIVERABLE.value else event.kind.value,
        updated_at=now,
        routed_at=row["routed_at"] or routed_at,
    )


async def _documents(session: AsyncSession, batch: list[Event]) -> dict[tuple[str, str], Document]:
    """The documents these events are about, by backbone id, or for statuses by (sender,
    DocumentId) either way round (a recall comes from the sender)."""
    keys = set()
    for e in batch:
        if isinstance(e, StatusEvent):
            keys.add((e.addressee, e.document_id))
            keys.add((e.reporter, e.document_id))
    backbone_ids = {b for e in batch if (b := _backbone_id(e))}
    return await queries.documents(session, backbone_ids, keys)


def _backbone_id(event: Event) -> str | None:
    """Events of the transport know the document's backbone id; the others do not."""
    if isinstance(event, AcceptedEvent | RoutedEvent | UndeliverableEvent):
        return event.backbone_id
    return None
