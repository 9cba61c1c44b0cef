"""The tracker: each document's lifecycle per recipient as statuses come, and where each
status is forwarded."""

from __future__ import annotations

from datetime import datetime, timedelta

from backbone import edxml
from backbone.broker import topology

from ..conftest import SENDER
from ..worlds import World, document

A, B = "000.00.00.H41", "000.00.00.H14"


async def sent(world: World, *recipients: str) -> edxml.DocumentPackage:
    """A document from SENDER, routed to ``recipients`` (registered with inboxes)."""
    for code in (SENDER, *recipients):
        await world.add_agency(code)
    package = document(recipients=recipients)
    await world.submit(world.signers["G22"].sign(package))
    await world.routed(package, *recipients)
    return package


async def current(world: World, package: edxml.DocumentPackage, recipient: str = A) -> str:
    delivery = await world.delivery(package, recipient)
    assert delivery is not None
    return delivery.status_code or ""


async def test_the_happy_path_and_forwarding(world: World) -> None:
    package = await sent(world, A)
    await world.report(package, A, "01", "03", "04", "05", "06")
    await world.recorded(package, 5)
    delivery = await world.delivery(package, A)
    assert delivery is not None and delivery.status_code == "06"
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
    forwarded = await world.received(topology.inbox(SENDER), 5)
    assert sorted(f.status_code or "" for f in forwarded) == ["01", "03", "04", "05", "06"]


async def test_the_same_status_twice_and_out_of_order(world: World) -> None:
    package = await sent(world, A)
    await world.report(package, A, "01", "01", "05")
    await world.recorded(package, 3)
    await world.report(package, A, "04")
    await world.recorded(package, 4)
    delivery = await world.delivery(package, A)
    assert delivery is not None
    assert delivery.status_code == "05"  # never moves backwards
    assert delivery.assigned_at is not None  # but 04 is in the timeline
    assert await world.events(package.document_id, "anomaly") == []


async def test_contradictions_are_anomalies(world: World) -> None:
    package = await sent(world, A)
    issued = datetime.now().replace(microsecond=0)
    await world.report(package, A, "01", "02", now=issued)
    await world.recorded(package, 2)
    await world.report(package, A, "06", now=issued + timedelta(seconds=5))  # visibly after
    await world.recorded(package, 2, anomalies=1)
    assert await current(world, package) == "02"
    (anomaly,) = await world.events(package.document_id, "anomaly")
    assert anomaly.status_code == "06" and "02 is final" in (anomaly.description or "")


async def test_a_status_from_a_non_recipient_is_refused(world: World) -> None:
    package = await sent(world, A)
    await world.add_agency(B)
    await world.report(package, B, "01")
    await world.recorded(package, 0, anomalies=1)
    (anomaly,) = await world.events(package.document_id, "anomaly")
    assert anomaly.recipient == B
    assert "neither the sender nor a recipient" in (anomaly.description or "")
    (refusal,) = await world.received(topology.inbox(B), 1)
    assert refusal.headers["x-rejection-code"] == "status-refused"
    await world.empty(topology.inbox(SENDER))  # nothing forwarded


async def test_a_status_about_no_document_is_refused_to_its_reporter(world: World) -> None:
    await sent(world, A)
    stranger = document(recipients=[A])  # never sent
    await world.report(stranger, A, "01")
    copy, notice = await world.received(topology.inbox(A), 2)  # the document, then the 02
    assert copy.type == "edoc"
    assert notice.status_code == "02" and notice.headers["x-rejection-check"] == "tracker"
    assert "routed no such document" in (notice.package.header.description or "")  # type: ignore[union-attr]


async def test_recall_then_agreed_and_recall_then_refused(world: World) -> None:
    package = await sent(world, A, B)
    await world.report(package, A, "01")
    await world.report(package, B, "01")
    await world.recorded(package, 2)
    for target in (A, B):
        await world.report(package, SENDER, "13", about=target)
    await world.recorded(package, 4)
    await world.report(package, A, "15")
    await world.report(package, B, "16")
    await world.recorded(package, 6)
    a, b = await world.delivery(package, A), await world.delivery(package, B)
    assert a is not None and b is not None
    assert a.recall_requested_at and a.recall_agreed_at and not a.recall_refused_at
    assert b.recall_requested_at and b.recall_refused_at and not b.recall_agreed_at
    to_a = await world.received(topology.inbox(A), 2)  # the document and the recall
    assert [m.type for m in to_a] == ["edoc", "status"] and to_a[1].status_code == "13"
    answers = await world.received(topology.inbox(SENDER), 4)  # 01, 01, 15, 16
    assert sorted(m.status_code or "" for m in answers) == ["01", "01", "15", "16"]
