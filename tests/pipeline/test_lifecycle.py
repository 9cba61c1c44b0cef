"""The tracker on a real broker: each document's lifecycle per recipient, as statuses come."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway
from backbone.store.models import Delivery, Document, EventRecord

from ..conftest import SENDER, make_document
from ..databases import migrated, postgres_unreachable
from .conftest import Pipeline
from .test_reliability import wait_for
from .test_routing import raw_drain

pytestmark = pytest.mark.pipeline
A, B = "000.00.00.H41", "000.00.00.H14"


@pytest.fixture(params=["sqlite", "postgresql"])
def pipeline_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The lifecycle runs on both engines."""
    if request.param == "postgresql" and (unreachable := postgres_unreachable()):
        pytest.skip(unreachable)
    with migrated(request.param, tmp_path) as url:
        yield url


async def setup(pipeline: Pipeline, recipients: tuple[str, ...] = (A,)) -> edxml.DocumentPackage:
    for code in (SENDER, *recipients):
        await pipeline.add_agency(code)
    package = make_document(
        recipients=recipients, document_id=f"{SENDER},2026/11/23,{uuid.uuid4().hex[:8]}"
    )
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(package))
    await wait_for(lambda: _routed(pipeline, package, len(recipients)), 20)
    return package


async def _routed(pipeline: Pipeline, package: edxml.DocumentPackage, count: int) -> bool:
    async with pipeline.validator.store.sessions() as session:
        rows = await session.execute(
            select(Delivery)
            .join(Document)
            .where(
                Document.document_id == package.document_id, Delivery.transport_state == "routed"
            )
        )
        return len(rows.scalars().all()) >= count


async def report(
    pipeline: Pipeline, package: edxml.DocumentPackage, reporter: str, *codes: str
) -> None:
    async with AsyncGateway(pipeline.url(reporter), username=reporter) as gateway:
        for code in codes:
            await gateway.send_status(package, code, f"status {code}", reporter=reporter)


async def state(pipeline: Pipeline, package: edxml.DocumentPackage, recipient: str = A) -> Delivery:
    async with pipeline.validator.store.sessions() as session:
        return (
            await session.execute(
                select(Delivery)
                .join(Document)
                .where(Document.document_id == package.document_id, Delivery.recipient == recipient)
            )
        ).scalar_one()


async def events(
    pipeline: Pipeline, package: edxml.DocumentPackage, kind: str
) -> list[EventRecord]:
    async with pipeline.validator.store.sessions() as session:
        rows = await session.execute(
            select(EventRecord)
            .where(EventRecord.edxml_document_id == package.document_id, EventRecord.kind == kind)
            .order_by(EventRecord.id)
        )
        return list(rows.scalars())


async def settled(
    pipeline: Pipeline, package: edxml.DocumentPackage, statuses: int, anomalies: int = 0
) -> None:
    async def done() -> bool:
        return (
            len(await events(pipeline, package, "status")) >= statuses
            and len(await events(pipeline, package, "anomaly")) >= anomalies
        )

    try:
        await wait_for(done, 30)
    except AssertionError:
        recorded = [
            (e.kind, e.status_code, e.description)
            for k in ("status", "anomaly")
            for e in await events(pipeline, package, k)
        ]
        raise AssertionError(f"recorded so far: {recorded}") from None


async def test_the_happy_path_and_forwarding(pipeline: Pipeline) -> None:
    package = await setup(pipeline)
    await report(pipeline, package, A, "01", "03", "04", "05", "06")
    await settled(pipeline, package, 5)
    delivery = await state(pipeline, package)
    assert delivery.status_code == "06"
    assert all(
        [
            delivery.arrived_at,
            delivery.accepted_at,
            delivery.assigned_at,
            delivery.processing_at,
            delivery.done_at,
            delivery.routed_at,
        ]
    )
    forwarded = await raw_drain(pipeline, topology.inbox(SENDER))
    codes = [edxml.parse(body).header.status_code for body, _ in forwarded]  # type: ignore[union-attr]
    assert sorted(codes) == ["01", "03", "04", "05", "06"]


async def test_the_same_status_twice_and_out_of_order(pipeline: Pipeline) -> None:
    package = await setup(pipeline)
    await report(pipeline, package, A, "01", "01", "05")
    await settled(pipeline, package, 3)
    await report(pipeline, package, A, "04")
    await settled(pipeline, package, 4)
    delivery = await state(pipeline, package)
    assert delivery.status_code == "05"  # never moves backwards
    assert delivery.assigned_at is not None  # but 04 is in the timeline
    assert len(await events(pipeline, package, "anomaly")) == 0


async def test_contradictions_are_anomalies(pipeline: Pipeline) -> None:
    package = await setup(pipeline)
    await report(pipeline, package, A, "01", "02")
    await settled(pipeline, package, 2)
    await asyncio.sleep(1.1)  # package times have whole seconds: issue 06 visibly after 02
    await report(pipeline, package, A, "06")
    await settled(pipeline, package, 2, anomalies=1)
    assert (await state(pipeline, package)).status_code == "02"
    (anomaly,) = await events(pipeline, package, "anomaly")
    assert anomaly.status_code == "06" and "02 is final" in (anomaly.description or "")


async def test_a_status_from_a_non_recipient_is_refused(pipeline: Pipeline) -> None:
    package = await setup(pipeline)
    await pipeline.add_agency(B)
    await report(pipeline, package, B, "01")
    await settled(pipeline, package, 0, anomalies=1)
    (anomaly,) = await events(pipeline, package, "anomaly")
    assert anomaly.recipient == B and "neither the sender nor a recipient" in (
        anomaly.description or ""
    )
    (rejection,) = await raw_drain(pipeline, topology.inbox(B))
    assert rejection[1]["x-rejection-code"] == "status-refused"


async def test_recall_then_agreed_and_recall_then_refused(pipeline: Pipeline) -> None:
    package = await setup(pipeline, (A, B))
    await report(pipeline, package, A, "01")
    await report(pipeline, package, B, "01")
    await settled(pipeline, package, 2)
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        for target in (A, B):
            await sender.send_status(
                edxml.ResponseFor(organ_id=target, document_id=package.document_id),
                "13",
                "Thu hồi",
                reporter=SENDER,
            )
    await settled(pipeline, package, 4)
    await report(pipeline, package, A, "15")
    await report(pipeline, package, B, "16")
    await settled(pipeline, package, 6)
    a, b = await state(pipeline, package, A), await state(pipeline, package, B)
    assert a.recall_requested_at and a.recall_agreed_at and not a.recall_refused_at
    assert b.recall_requested_at and b.recall_refused_at and not b.recall_agreed_at
    recalls = [
        edxml.parse(body)
        for body, _ in await raw_drain(pipeline, topology.inbox(A))
        if b"<edXML:StatusCode>13<" in body
    ]
    assert len(recalls) == 1  # the recall was forwarded to the recipient


async def test_a_status_before_its_routing_is_recorded_waits_for_it(pipeline: Pipeline) -> None:
    pipeline.tracker.stop()  # hold the tracker back while the status overtakes the routing
    await asyncio.gather(pipeline.tasks[1])
    for code in (SENDER, A):
        await pipeline.add_agency(code)
    package = make_document(recipients=[A], document_id=f"early-{uuid.uuid4().hex[:8]}")
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(package))
    await asyncio.sleep(1)
    await report(pipeline, package, A, "01")
    await asyncio.sleep(1)
    # the tracker comes back: routing and status arrive together, the status may come first
    from backbone.workers import tracker as tracking

    tracker, store = tracking.build(pipeline.settings)
    ready = asyncio.Event()
    task = asyncio.create_task(tracker.run(ready=ready))
    try:
        await settled(pipeline, package, 1)
        assert (await state(pipeline, package)).status_code == "01"
        assert await events(pipeline, package, "anomaly") == []
    finally:
        tracker.stop()
        await task
        await store.close()
