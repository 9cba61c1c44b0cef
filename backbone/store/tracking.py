"""The tracker's queries: what a batch of events needs to read, and its event rows written
in bulk (one statement per batch; its deliveries go with the session's flush)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Delivery, Document, EventRecord


async def known_events(session: AsyncSession, event_ids: Sequence[str]) -> set[str]:
    """Which of these events are recorded already (a redelivered batch)."""
    rows = await session.execute(
        select(EventRecord.event_id).where(EventRecord.event_id.in_(event_ids))
    )
    return set(rows.scalars())


async def documents(
    session: AsyncSession, backbone_ids: Iterable[str], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Document]:
    """The documents with these backbone ids or (sender, DocumentId) keys (which their
    unique index serves), keyed by (sender, DocumentId)."""
    ids, pairs = set(backbone_ids), set(keys)
    found: dict[tuple[str, str], Document] = {}
    queries = []
    if ids:
        queries.append(select(Document).where(Document.id.in_(ids)))
    if pairs:
        queries.append(
            select(Document).where(tuple_(Document.sender, Document.document_id).in_(pairs))
        )
    for query in queries:
        for document in (await session.execute(query)).scalars():
            found[(document.sender, document.document_id)] = document
    return found


async def deliveries(
    session: AsyncSession, document_pks: Iterable[str]
) -> dict[tuple[str, str], Delivery]:
    """The deliveries of these documents, keyed by (document, recipient)."""
    pks = set(document_pks)
    if not pks:
        return {}
    rows = await session.execute(select(Delivery).where(Delivery.document_pk.in_(pks)))
    return {(d.document_pk, d.recipient): d for d in rows.scalars()}


async def first_status_at(
    session: AsyncSession, delivery: Delivery, status_code: str
) -> datetime | None:
    """When the package of the first status ``status_code`` of a delivery was issued."""
    issued = (
        await session.execute(
            select(EventRecord.occurred_at)
            .where(
                EventRecord.document_pk == delivery.document_pk,
                EventRecord.recipient == delivery.recipient,
                EventRecord.kind == "status",
                EventRecord.status_code == status_code,
            )
            .order_by(EventRecord.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    if issued is not None and issued.tzinfo is None:  # SQLite drops the zone
        issued = issued.replace(tzinfo=UTC)
    return issued


async def add_events(session: AsyncSession, rows: Sequence[dict[str, object]]) -> None:
    """The batch's events, after the changes to its deliveries (the flush: on SQLite, the
    write lock is taken here)."""
    if rows:
        await session.flush()
        await session.execute(insert(EventRecord), list(rows))


async def timeline(
    session: AsyncSession, document_pk: str
) -> tuple[list[Delivery], list[EventRecord]]:
    """A document's deliveries (by recipient) and everything recorded about it, in order."""
    deliveries = await session.execute(
        select(Delivery).where(Delivery.document_pk == document_pk).order_by(Delivery.recipient)
    )
    events = await session.execute(
        select(EventRecord)
        .where(EventRecord.document_pk == document_pk)
        .order_by(EventRecord.recorded_at, EventRecord.id)
    )
    return list(deliveries.scalars()), list(events.scalars())


async def feed(
    session: AsyncSession, senders: Iterable[str], after: int, limit: int
) -> list[EventRecord]:
    """What was recorded about these senders' documents after event ``after``, in the order
    it was recorded (the tracker commits one batch at a time, so ids grow with commits)."""
    rows = await session.execute(
        select(EventRecord)
        .where(EventRecord.sender.in_(sorted(senders)), EventRecord.id > after)
        .order_by(EventRecord.id)
        .limit(limit)
    )
    return list(rows.scalars())
