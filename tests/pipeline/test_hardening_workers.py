"""Issue 13 on a real broker: hostile message ids, cheap checks first, bounded statuses
and fan-out, and a validator loop that keeps serving while a package is checked."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import select

from backbone import edxml, signing
from backbone.broker import topology
from backbone.edxml.factory import File
from backbone.errors import BrokerRefused
from backbone.events import Event, StatusEvent
from backbone.store.models import EventRecord
from backbone.workers.checks import INLINE_BELOW

from ..conftest import SENDER, Signer, make_status
from ..worlds import document
from .conftest import Pipeline
from .helpers import RECIPIENTS, drain, rejection, wait_for

pytestmark = pytest.mark.pipeline
LONG_ID = "m" * 250  # AMQP's short string holds 255 bytes: "rejection:" + this overflowed
NUL_ID = "abc\x00def"


async def publish(pipeline: Pipeline, body: bytes, message_id: str, *, kind: str = "edoc") -> None:
    connection = await aio_pika.connect(pipeline.url(SENDER))
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.SUBMIT)
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, type=kind, user_id=SENDER),
            routing_key=SENDER,
        )
    finally:
        await connection.close()


async def agencies(pipeline: Pipeline) -> None:
    for code in (SENDER, *RECIPIENTS[:2]):
        await pipeline.add_agency(code)


@pytest.mark.parametrize("message_id", [LONG_ID, NUL_ID], ids=["long", "nul"])
async def test_a_hostile_message_id_still_gets_a_rejection(
    pipeline: Pipeline, message_id: str
) -> None:
    await agencies(pipeline)
    await publish(pipeline, b"<edXML><unclosed></edXML>", message_id)
    delivery = await rejection(pipeline)
    assert delivery.rejection is not None and delivery.rejection["check"] == "2-parse"
    assert "\x00" not in (delivery.headers.get("x-rejected-message-id") or "")
    # and the validator goes on: the next document is routed
    signed = pipeline.signers["G22"].sign(document(recipients=[RECIPIENTS[0]]))
    await publish(pipeline, signed, uuid.uuid4().hex)
    (copy,) = await drain(pipeline, topology.inbox(RECIPIENTS[0]), RECIPIENTS[0], count=1)
    assert copy.body == signed


@pytest.mark.parametrize("message_id", [LONG_ID, NUL_ID], ids=["long", "nul"])
async def test_a_refused_status_with_a_hostile_message_id_does_not_stop_the_tracker(
    pipeline: Pipeline, message_id: str
) -> None:
    """A status about no document is refused by the tracker, to the reporter's inbox."""
    await agencies(pipeline)
    status = edxml.build(make_status(reporter=SENDER), validate=False)
    await publish(pipeline, status, message_id, kind="status")
    (refusal,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1, timeout=20)
    assert refusal.rejection is not None and refusal.rejection["check"] == "tracker"
    assert refusal.rejection["code"] == "status-refused"
    await assert_tracker_records_the_next_document(pipeline)


async def test_an_event_with_a_300_character_message_id_fails_alone(pipeline: Pipeline) -> None:
    """The event path directly: ids longer than any short string, in the event's JSON."""
    await agencies(pipeline)
    await publish_event(pipeline, _status_01("x,1", "s" * 300))
    (refusal,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1, timeout=20)
    assert refusal.rejection is not None and refusal.rejection["code"] == "status-refused"
    await assert_tracker_records_the_next_document(pipeline)


async def test_a_forward_the_broker_refuses_once_is_retried_not_quarantined(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracker's 02 for a refused status meets one unconfirmed publish: the batch is
    retried, and the sender still hears of it."""
    await agencies(pipeline)
    real = pipeline.tracker._publish
    faults: list[int] = []

    async def once_refused(outgoing: Any) -> None:
        if outgoing and not faults:
            faults.append(1)
            raise BrokerRefused("publish not confirmed")
        await real(outgoing)

    monkeypatch.setattr(pipeline.tracker, "_publish", once_refused)
    await publish_event(pipeline, _status_01("x,2", uuid.uuid4().hex))
    (refusal,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1, timeout=30)
    assert refusal.rejection is not None and refusal.rejection["code"] == "status-refused"
    assert faults == [1]


def _status_01(document_id: str, message_id: str) -> Event:
    """A 01 from a recipient about a document it never received: the tracker refuses it."""
    return StatusEvent(
        addressee=RECIPIENTS[0],
        reporter=SENDER,
        document_id=document_id,
        status_code="01",
        message_id=message_id,
        package="",  # refused before it would be forwarded
    )


async def publish_event(pipeline: Pipeline, event: Event) -> None:
    """An event straight to the tracker's exchange, as the validator publishes it."""
    connection = await aio_pika.connect(pipeline.url())
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.EVENTS)
        await exchange.publish(
            aio_pika.Message(event.body(), message_id=event.event_id), routing_key="event.status"
        )
    finally:
        await connection.close()


async def assert_tracker_records_the_next_document(pipeline: Pipeline) -> None:
    package = document(recipients=[RECIPIENTS[0]])
    await publish(pipeline, pipeline.signers["G22"].sign(package), uuid.uuid4().hex)
    await drain(pipeline, topology.inbox(RECIPIENTS[0]), RECIPIENTS[0], count=1)
    assert pipeline.tracker.consuming, "the tracker stopped"
    for _ in range(100):
        async with pipeline.validator.store.sessions() as session:
            kinds = set(
                (
                    await session.execute(
                        select(EventRecord.kind).where(
                            EventRecord.edxml_document_id == package.document_id
                        )
                    )
                ).scalars()
            )
        if "routed" in kinds:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the tracker did not record the next document: {kinds}")


async def test_an_inactive_principal_is_refused_at_check_1_before_any_parse(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    await agencies(pipeline)
    await pipeline.registry.deactivate_agency(SENDER)
    parsed: list[int] = []
    real = edxml.load_tree

    def spy(body: bytes, *args: object, **kwargs: object) -> object:
        parsed.append(len(body))
        return real(body, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(edxml, "load_tree", spy)
    signed = pipeline.signers["G22"].sign(document(recipients=[RECIPIENTS[0]]))
    await publish(pipeline, signed, uuid.uuid4().hex)
    delivery = await rejection(pipeline)
    assert delivery.rejection is not None
    assert delivery.rejection["check"] == "1-principal"
    assert delivery.rejection["code"] == "principal-not-allowed"
    assert parsed == []


async def test_a_small_package_completes_while_a_large_one_is_being_checked(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package past ``INLINE_BELOW`` is parsed off the loop: while its parse is held, the
    small one is routed. (On the loop, the held parse would stall everything until released.)"""
    await agencies(pipeline)
    sign = pipeline.signers["G22"].sign
    pdf = File("cong-van.pdf", os.urandom(INLINE_BELOW), "application/pdf")
    large = sign(document(recipients=[RECIPIENTS[0]], files=[pdf]))  # its parse is held
    small = sign(document(recipients=[RECIPIENTS[1]]))
    assert len(large) >= INLINE_BELOW > len(small)
    gate, entered = threading.Event(), threading.Event()
    order: list[str] = []
    real = edxml.load_tree

    def held(body: bytes, *args: object, **kwargs: object) -> object:
        if body == large:
            entered.set()
            order.append("large released" if gate.wait(timeout=15) else "large timed out")
        return real(body, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(edxml, "load_tree", held)
    await publish(pipeline, large, uuid.uuid4().hex)
    assert await asyncio.to_thread(entered.wait, 15)
    await publish(pipeline, small, uuid.uuid4().hex)
    (copy,) = await drain(pipeline, topology.inbox(RECIPIENTS[1]), RECIPIENTS[1], count=1)
    assert copy.body == small
    gate.set()
    (copy,) = await drain(pipeline, topology.inbox(RECIPIENTS[0]), RECIPIENTS[0], count=1)
    assert copy.body == large
    assert order == ["large released"]


async def test_the_tracker_pauses_at_its_byte_budget_and_resumes(pipeline: Pipeline) -> None:
    """A budget of one byte: every event message stops the deliveries as it arrives, and
    they go on once what it holds is recorded, until everything is; then the tracker
    consumes with nothing held, and goes on at its usual budget."""
    await agencies(pipeline)
    tracker = pipeline.tracker
    budget, tracker.byte_budget = tracker.byte_budget, 1
    packages = [document(recipients=[RECIPIENTS[0]]) for _ in range(3)]
    for package in packages:
        await publish(pipeline, pipeline.signers["G22"].sign(package), uuid.uuid4().hex)
    ids = [package.document_id for package in packages]

    async def recorded_and_consuming() -> bool:
        async with pipeline.validator.store.sessions() as session:
            routed = set(
                (
                    await session.execute(
                        select(EventRecord.edxml_document_id).where(
                            EventRecord.edxml_document_id.in_(ids), EventRecord.kind == "routed"
                        )
                    )
                ).scalars()
            )
        return routed == set(ids) and tracker.consuming and tracker.held == 0

    await wait_for(recorded_and_consuming, 30)
    assert tracker.pauses >= 1
    tracker.byte_budget = budget
    await assert_tracker_records_the_next_document(pipeline)


async def test_the_private_node_refuses_a_message_just_above_the_package_limit(
    pipeline: Pipeline,
) -> None:
    from backbone.broker import localnode

    if pipeline.broker.node is None:
        pytest.skip("the broker is not a private node of this project")
    assert pipeline.settings.max_package_bytes < localnode.MAX_MESSAGE_SIZE
    connection = await aio_pika.connect(pipeline.url())
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topology.SUBMIT)
        with pytest.raises(aio_pika.exceptions.AMQPError, match="message size"):
            await exchange.publish(
                aio_pika.Message(b"x" * (localnode.MAX_MESSAGE_SIZE + 1)), routing_key=SENDER
            )
            await channel.get_exchange(topology.SUBMIT)  # the channel closed meanwhile
    finally:
        await connection.close()


async def test_a_revocation_reaches_a_running_validator(
    pipeline: Pipeline, pki: signing.Pki, tmp_path: Path
) -> None:
    """`pki revoke` rewrites the CRL file; the next document signed with that
    certificate is refused without a restart."""
    await agencies(pipeline)
    pipeline.validator.checks.verifier.trust.refresh_every(0)  # look at every package
    issued = pki.issue(SENDER, tmp_path / "soon-revoked")
    signer = Signer(issued.code, issued.key, issued.certificate, issued.fingerprint)
    await publish(pipeline, signer.sign(document(recipients=[RECIPIENTS[0]])), uuid.uuid4().hex)
    assert await drain(pipeline, topology.inbox(RECIPIENTS[0]), RECIPIENTS[0], count=1)
    pki.revoke(issued.certificate)
    await publish(pipeline, signer.sign(document(recipients=[RECIPIENTS[0]])), uuid.uuid4().hex)
    delivery = await rejection(pipeline)
    assert delivery.rejection is not None
    assert (delivery.rejection["check"], delivery.rejection["code"]) == (
        "5-signature",
        "certificate-revoked",
    )
