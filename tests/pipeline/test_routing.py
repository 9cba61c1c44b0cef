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


async def test_one_package_reaches_three_inboxes_byte_identical(pipeline: Pipeline) -> None:
    for code in (SENDER, *RECIPIENTS):
        await pipeline.add_agency(code)
    package = document(recipients=RECIPIENTS)
    signed = pipeline.signers["G22"].sign(package)
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        assert await sender.send(signed) == package.document_id
    backbone_ids = set()
    for code in RECIPIENTS:
        (delivery,) = await drain(pipeline, topology.inbox(code), code, count=1)
        assert delivery.body == signed
        assert delivery.headers["x-sender"] == SENDER
        assert delivery.headers["x-edxml-document-id"] == package.document_id
        assert delivery.headers["x-signer"] == pipeline.signers["G22"].fingerprint
        assert "x-accepted-at" in delivery.headers
        backbone_ids.add(delivery.backbone_id)
    assert len(backbone_ids) == 1 and None not in backbone_ids


async def test_a_gateway_receives_for_the_agencies_its_pattern_serves(pipeline: Pipeline) -> None:
    await pipeline.add_agency(SENDER)
    for code in ("000.00.15.H41", "000.00.15.H42"):
        await pipeline.add_agency(code, inbox=False)
    await pipeline.add_gateway("lgsp-h41", ["*.*.*.H41"])
    for_h41 = pipeline.signers["G22"].sign(document(recipients=["000.00.15.H41"]))
    for_h42 = pipeline.signers["G22"].sign(document(recipients=["000.00.15.H42"]))
    async with AsyncGateway(pipeline.url(SENDER), username=SENDER) as sender:
        await sender.send(for_h41)
        await sender.send(for_h42)
    received = await drain(pipeline, topology.gateway_queue("lgsp-h41"), "lgsp-h41", timeout=5)
    assert [d.body for d in received] == [for_h41]
    assert received[0].recipient == "000.00.15.H41"


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


@pytest.mark.parametrize(
    ("case", "check", "code"),
    [
        ("malformed", "2-parse", "malformed"),
        ("bad-signature", "5-signature", "digest-mismatch"),
        ("not-allowed", "1-principal", "principal-not-allowed"),
        ("unknown-recipient", "7-recipients", "unknown-recipient"),
        ("missing-user-id", "1-principal", "missing-user-id"),
        ("invalid", "3-structure", "bad-agency-id"),
        ("unsigned", "5-signature", "unsigned"),
    ],
)
async def test_each_failure_is_rejected_to_the_sender_and_never_routed(
    pipeline: Pipeline, case: str, check: str, code: str
) -> None:
    for agency in (SENDER, RECIPIENTS[0], RECIPIENTS[1]):
        await pipeline.add_agency(agency)
    sign = pipeline.signers["G22"].sign
    good = sign(document(recipients=[RECIPIENTS[0]]))
    if case == "malformed":
        await submit(pipeline, b"<edXML><unclosed></edXML>")
    elif case == "bad-signature":
        await submit(pipeline, good.replace(b"7816", b"7817", 1))
    elif case == "not-allowed":  # a broker user that is no principal (the broker lets the
        await submit(pipeline, good, user="guest")  # administrator use any routing key)
    elif case == "unknown-recipient":
        await submit(pipeline, sign(document(recipients=[RECIPIENTS[0], "000.00.99.H41"])))
    elif case == "missing-user-id":
        await submit(pipeline, good, user_id=None)
    elif case == "invalid":
        await submit(pipeline, edxml.build(document(recipients=["null"]), validate=False))
    elif case == "unsigned":
        await submit(pipeline, edxml.build(document(recipients=[RECIPIENTS[0]])))
    delivery = await rejection(pipeline)
    assert delivery.rejection is not None
    assert delivery.rejection["check"] == check and delivery.rejection["code"] == code
    description = delivery.package.header.description or ""  # type: ignore[union-attr]
    assert check in description and code in description
    await assert_inboxes_empty(pipeline, RECIPIENTS[0], RECIPIENTS[1])


async def test_a_duplicate_document_id_is_rejected_but_a_redelivery_is_not(
    pipeline: Pipeline,
) -> None:
    for agency in (SENDER, RECIPIENTS[0]):
        await pipeline.add_agency(agency)
    package = document(recipients=[RECIPIENTS[0]])
    first = pipeline.signers["G22"].sign(package)
    await submit(pipeline, first)
    await submit(pipeline, first)  # the same submission again: delivered again, not refused
    other = pipeline.signers["G22"].sign(
        package.model_copy(
            update={
                "header": package.header.model_copy(update={"subject": "Another letter, same id"})
            }
        )
    )
    await submit(pipeline, other)
    delivery = await rejection(pipeline)
    assert delivery.rejection is not None and delivery.rejection["code"] == "duplicate"
    copies = await raw_drain(pipeline, topology.inbox(RECIPIENTS[0]))
    assert [body for body, _ in copies] == [first, first]  # both routed...
    assert copies[0][1]["x-backbone-id"] == copies[1][1]["x-backbone-id"]  # ...as one document


async def raw_drain(pipeline: Pipeline, queue: str) -> list[tuple[bytes, dict[str, object]]]:
    """Everything in a queue, read with plain aio-pika (no SDK de-duplication)."""
    connection = await aio_pika.connect(pipeline.url())
    found = []
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        while (message := await source.get(fail=False, timeout=5)) is not None:
            await message.ack()
            found.append((message.body, dict(message.headers or {})))
    finally:
        await connection.close()
    return found


async def test_the_sdk_hands_a_redelivered_document_over_once(pipeline: Pipeline) -> None:
    for agency in (SENDER, RECIPIENTS[0]):
        await pipeline.add_agency(agency)
    signed = pipeline.signers["G22"].sign(document(recipients=[RECIPIENTS[0]]))
    await submit(pipeline, signed)
    await submit(pipeline, signed)
    delivered = await drain(pipeline, topology.inbox(RECIPIENTS[0]), RECIPIENTS[0], timeout=3)
    assert [d.body for d in delivered] == [signed]


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
    answered = [s.package.document_id for s in statuses]
    assert sorted(set(answered)) == sorted(p.document_id for p in packages)
    await assert_inboxes_empty(pipeline, RECIPIENTS[0])  # every copy handled and acked
