"""The gateway SDK through the whole backbone: a document received is answered with 01,
which reaches its sender; ``serve`` handles several at once and gives back a failed one."""

from __future__ import annotations

import asyncio

from backbone.broker import topology
from backbone.client import Delivery

from ..conftest import SENDER
from ..worlds import World, document

H41 = "000.00.00.H41"
WAIT = 20.0  # seconds the SDK waits for what must arrive


async def test_the_sdk_answers_with_status_01_which_reaches_the_sender(world: World) -> None:
    for code in (SENDER, H41):
        await world.add_agency(code)
    package = document(recipients=[H41])
    async with world.gateway(SENDER) as sender:
        assert await sender.send(world.signers["G22"].sign(package)) == package.document_id
    async with world.gateway(H41) as recipient:
        received = []
        async for delivery in recipient.receive(topology.inbox(H41), timeout=WAIT, count=1):
            await delivery.ack()
            received.append(delivery)
    (delivery,) = received
    assert delivery.package.document_id == package.document_id and delivery.recipient == H41
    (status,) = await world.received(topology.inbox(SENDER), 1)
    assert status.status_code == "01" and status.headers["x-sender"] == H41
    assert status.package.document_id == package.document_id


async def test_serve_handles_deliveries_at_once_and_returns_a_failed_one(world: World) -> None:
    for code in (SENDER, H41):
        await world.add_agency(code)
    packages = [document(recipients=[H41]) for _ in range(6)]
    async with world.gateway(SENDER) as sender:
        for package in packages:
            await sender.send(world.signers["G22"].sign(package))
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
            await asyncio.sleep(0.1)  # slow work: the others proceed meanwhile
            if document_id == packages[0].document_id and not failed:
                failed.append(document_id)
                raise RuntimeError("the application failed once")
            handled.append(document_id)
            if len(handled) == len(packages):
                stop.set()
        finally:
            running -= 1

    async with world.gateway(H41) as recipient:
        await asyncio.wait_for(recipient.serve(topology.inbox(H41), handler, stop=stop), WAIT)
    assert sorted(handled) == sorted(p.document_id for p in packages)
    assert failed == [packages[0].document_id]  # given back, then handled on redelivery
    assert most > 1
    statuses = await world.received(topology.inbox(SENDER), 7)  # a 01 again for the failed one
    assert sorted({s.package.document_id or "" for s in statuses}) == sorted(
        p.document_id for p in packages
    )
    assert len(statuses) == 7
    await world.empty(topology.inbox(H41), topology.QUARANTINE)  # every copy handled, acked
