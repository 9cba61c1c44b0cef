"""What the workers do that only the in-memory broker makes deterministic: many pauses at
the tracker's and the validator's byte budgets, a worker that dies, a worker started
before `backbone init`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from backbone import events
from backbone.broker import topology
from backbone.broker.transport import Outgoing
from backbone.errors import BrokerRefused
from backbone.store import tracking
from backbone.testing import MemoryBroker
from backbone.workers.supervisor import serve
from backbone.workers.tracker import Tracker
from backbone.workers.validator import Validator

from ..bodies.lifecycle import A, B
from ..conftest import SENDER
from ..worlds import document
from .conftest import MemoryWorld


async def test_the_tracker_pauses_at_its_byte_budget_resumes_and_settles_everything(
    world: MemoryWorld,
) -> None:
    """A budget a few events wide: the tracker pauses and resumes on the same channel, its
    batches mix what it took before a pause with what it took after, and one ack settles
    them all: nothing stays unacked (join() would say what is held)."""
    for code in (SENDER, A):
        await world.add_agency(code)
    world.tracker.byte_budget = 2000
    packages = [document(recipients=[A]) for _ in range(12)]
    for package in packages:
        await world.submit(world.signers["G22"].sign(package))
    await world.settled(topology.TRACKER)
    for package in packages:
        await world.routed(package, A)
    assert world.tracker.pauses >= 1
    assert world.tracker.held == 0
    assert world.validator.publisher.batches < len(packages)  # events travel several to one


async def test_the_validator_pauses_at_its_byte_budget_and_routes_everything(
    world: MemoryWorld,
) -> None:
    """Bodies of about two packages at a time: the validator stops consuming past them
    (its memory bounded where a prefetch count cannot) and consumes again at half with a
    window of about two, until every package is routed and nothing is held; a budget that
    holds many more makes the window grow back."""
    for code in (SENDER, A):
        await world.add_agency(code)
    validator = world.validator

    async def route(count: int) -> None:
        packages = [document(recipients=[A]) for _ in range(count)]
        bodies = [world.signers["G22"].sign(package) for package in packages]
        await asyncio.gather(*(world.submit(body) for body in bodies))
        for package in packages:
            await world.routed(package, A)
        assert validator.held == 0 and validator.consuming

    size = len(world.signers["G22"].sign(document(recipients=[A])))
    validator.byte_budget = 2 * size
    await route(12)
    assert validator.pauses >= 1
    assert validator.window <= 3  # the budget over the largest body lately
    validator.byte_budget = 100 * size
    await route(4)
    assert validator.window >= 50


async def test_rows_the_database_refuses_are_quarantined_not_retried(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IntegrityError is the batch's own fault, not an outage: the tracker takes the batch
    apart at once and quarantines the message that fails alone, instead of retrying it for
    ever (and publishing its forwards again each time, since they go before the writes)."""
    for code in (SENDER, A):
        await world.add_agency(code)
    bad, good = document(recipients=[A]), document(recipients=[A])
    real, refusals = tracking.add_events, 0

    async def refusing(session: Any, rows: Sequence[dict[str, object]]) -> None:
        nonlocal refusals
        if any(row["edxml_document_id"] == bad.document_id for row in rows):
            refusals += 1
            raise IntegrityError("INSERT INTO events", {}, Exception("refused"))
        await real(session, rows)

    monkeypatch.setattr(tracking, "add_events", refusing)
    await world.submit(world.signers["G22"].sign(bad))
    await world.broker.join()  # without the fix, the batch is retried here for ever
    assert world.broker.depth(topology.QUARANTINE) == 1
    assert refusals <= 2  # the batch, then its one event alone
    await world.submit(world.signers["G22"].sign(good))
    await world.routed(good, A)


async def test_a_worker_whose_own_task_dies_ends_serve_with_its_error(
    world: MemoryWorld,
) -> None:
    """The tracker's record loop failing must not leave a tracker that looks alive."""
    tracker = Tracker.from_settings(world.settings, transport=world.broker.transport("backbone"))
    serving = asyncio.create_task(serve([tracker]))
    while not tracker.consuming:  # until serve has it running
        await asyncio.sleep(0)
    tracker.fail(RuntimeError("the record loop died"))
    with pytest.raises(RuntimeError, match="the record loop died"):
        await asyncio.wait_for(serving, 10)


async def test_a_validator_started_before_init_fails_at_once(world: MemoryWorld) -> None:
    broker = MemoryBroker()
    del broker.exchanges[topology.DELIVER]  # as if `backbone init` never ran
    validator = Validator.from_settings(world.settings, transport=broker.transport("backbone"))
    with pytest.raises(BrokerRefused, match=topology.DELIVER):
        async with validator.running():
            pass


async def test_a_tracker_that_cannot_consume_fails_and_leaves_no_loop_behind(
    world: MemoryWorld,
) -> None:
    broker = MemoryBroker()
    del broker.queues[topology.TRACKER]  # its queue absent: consuming is refused
    tracker = Tracker.from_settings(world.settings, transport=broker.transport("backbone"))
    with pytest.raises(BrokerRefused, match=topology.TRACKER):
        async with tracker.running():
            pass
    assert tracker._loop is not None and tracker._loop.done()


async def test_the_tracker_records_what_validators_from_before_batching_send(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During an upgrade, validators not yet upgraded publish one event per message, and
    an accepted document's copies as routed events of their own: the tracker records
    them as before (routing, statuses, forwarding)."""
    publisher = world.validator.publisher
    sent_alone: list[str] = []

    async def one_by_one(*batch: events.Event) -> None:
        for event in batch:
            if isinstance(event, events.AcceptedEvent):
                copies = event.copies()
                event = event.model_copy(update={"routed": (), "undeliverable": ()})
                await publish_alone(event)
                for copy in copies:
                    await publish_alone(copy)
            else:
                await publish_alone(event)

    async def publish_alone(event: events.Event) -> None:
        sent_alone.append(event.kind.value)
        await publisher.connection.publish(
            topology.EVENTS,
            Outgoing(
                event.body(),
                events.routing_key(event),
                message_id=event.event_id,
                type=event.kind.value,
                content_type="application/json",
            ),
        )

    monkeypatch.setattr(publisher, "event", one_by_one)
    for code in (SENDER, A, B):
        await world.add_agency(code)
    package = document(recipients=[A, B])
    await world.submit(world.signers["G22"].sign(package))
    await world.routed(package, A, B)
    await world.report(package, A, "01")
    await world.recorded(package, 1)
    (forwarded,) = await world.received(topology.inbox(SENDER), 1)
    assert forwarded.status_code == "01"
    assert sent_alone == ["accepted", "routed", "routed", "status"]
    assert publisher.batches == 0  # nothing went out as a batch
