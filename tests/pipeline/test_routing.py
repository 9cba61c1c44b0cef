"""The pipeline on a real broker: routing, gateways, and every way a submission is rejected."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway, Delivery

from ..conftest import SENDER, make_document
from .conftest import Pipeline

pytestmark = pytest.mark.pipeline
RECIPIENTS = ("000.00.00.H41", "000.00.15.H41", "000.00.00.H14")


async def drain(
    pipeline: Pipeline,
    queue: str,
    user: str = "guest",
    *,
    count: int | None = None,
    timeout: float = 10.0,
) -> list[Delivery]:
    async with AsyncGateway(pipeline.url(user), username=user, auto_arrived=False) as gateway:
        deliveries = []
        async for delivery in gateway.receive(queue, timeout=timeout, count=count):
            await delivery.ack()
            deliveries.append(delivery)
        return deliveries


def document(**fields: object) -> edxml.DocumentPackage:
    fields.setdefault("document_id", f"{SENDER},2026/11/23,{uuid.uuid4().hex[:8]}/VPCP")
    return make_document(**fields)


async def submit(
    pipeline: Pipeline,
    body: bytes,
    *,
    user: str = SENDER,
    routing_key: str = SENDER,
    user_id: str | None = "same",
) -> None:
    """Publish as a gateway would, with raw control over what the message claims."""
    connection = await aio_pika.connect(pipeline.url(user))
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.SUBMIT)
        message = aio_pika.Message(
            body,
            message_id=uuid.uuid4().hex,
            type="edoc",
            user_id=user if user_id == "same" else user_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(message, routing_key=routing_key)
    finally:
        await connection.close()


async def test_the_sdk_answers_with_status_01_which_reaches_the_sender(pipeline: Pipeline) -> None:
    for code in (SENDER, RECIPIENTS[0]):
        await pipeline.add_agency(code)
    package = document(recipients=[RECIPIENTS[0]])
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(pipeline.signers["G22"].sign(package))
    async with AsyncGateway(pipeline.url(RECIPIENTS[0]), username=RECIPIENTS[0]) as recipient:
        async for delivery in recipient.receive(topology.inbox(RECIPIENTS[0]), timeout=10, count=1):
            await delivery.ack()
    (status,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1)
    assert isinstance(status.package, edxml.StatusPackage)
    assert status.package.header.status_code == "01"
    assert status.package.document_id == package.document_id
    assert status.package.sender == RECIPIENTS[0]


async def rejection(pipeline: Pipeline) -> Delivery:
    (delivery,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1)
    assert isinstance(delivery.package, edxml.StatusPackage)
    assert delivery.package.header.status_code == "02"
    assert delivery.package.sender == "000.00.00.B00"
    assert delivery.rejection is not None
    return delivery


async def assert_inboxes_empty(pipeline: Pipeline, *codes: str) -> None:
    """Called once the outcome is in (a rejection: the validator publishes the copies or
    the rejection of a submission, never both), so empty inboxes now prove it without
    waiting."""
    connection = await aio_pika.connect(pipeline.url())
    try:
        channel = await connection.channel()
        for code in codes:
            inbox = await channel.declare_queue(topology.inbox(code), passive=True)
            assert inbox.declaration_result.message_count == 0, code
    finally:
        await connection.close()


async def raw_drain(pipeline: Pipeline, queue: str) -> list[tuple[bytes, dict[str, object]]]:
    """Everything in a queue, read with plain aio-pika (no SDK de-duplication)."""
    connection = await aio_pika.connect(pipeline.url())
    found: list[tuple[bytes, dict[str, object]]] = []
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while (message := await source.get(fail=False, timeout=5)) is not None:
            await message.ack()
            found.append((message.body, dict(message.headers or {})))
    finally:
        await connection.close()
    return found


async def test_serve_handles_deliveries_at_once_and_returns_a_failed_one(
    pipeline: Pipeline,
) -> None:
    for code in (SENDER, RECIPIENTS[0]):
        await pipeline.add_agency(code)
    packages = [document(recipients=[RECIPIENTS[0]]) for _ in range(6)]
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        for package in packages:
            await sender.send(pipeline.signers["G22"].sign(package))
    handled: list[str] = []
    failed: list[str] = []
    running, most = 0, 0
    stop = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        nonlocal running, most
        document_id = delivery.package.document_id or ""
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.3)  # slow work: the others proceed meanwhile
            if document_id == packages[0].document_id and not failed:
                failed.append(document_id)
                raise RuntimeError("the application failed once")
            handled.append(document_id)
            if len(handled) == len(packages):
                stop.set()
        finally:
            running -= 1

    async with AsyncGateway(pipeline.url(RECIPIENTS[0]), username=RECIPIENTS[0]) as recipient:
        await asyncio.wait_for(
            recipient.serve(topology.inbox(RECIPIENTS[0]), handler, stop=stop), timeout=30
        )
    assert sorted(handled) == sorted(p.document_id for p in packages)
    assert failed == [packages[0].document_id]  # returned, then handled on redelivery
    assert most > 1
    statuses = await drain(pipeline, topology.inbox(SENDER), SENDER, count=7, timeout=5)
    answered = [s.package.document_id or "" for s in statuses]
    assert sorted(set(answered)) == sorted(p.document_id for p in packages)
    await assert_inboxes_empty(pipeline, RECIPIENTS[0])  # every copy handled and acked
