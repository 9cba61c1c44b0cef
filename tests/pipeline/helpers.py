"""What the real-broker tests share: publishing as a gateway would, draining a queue (with
the SDK or raw), counting what waits in one, waiting for a condition, and the rejection a
sender gets back."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import aio_pika

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway, Delivery

from ..conftest import SENDER

if TYPE_CHECKING:
    from .conftest import Pipeline

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


async def rejection(pipeline: Pipeline) -> Delivery:
    (delivery,) = await drain(pipeline, topology.inbox(SENDER), SENDER, count=1)
    assert isinstance(delivery.package, edxml.StatusPackage)
    assert delivery.package.header.status_code == "02"
    assert delivery.package.sender == "000.00.00.B00"
    assert delivery.rejection is not None
    return delivery


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


async def ready_count(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError("timed out")
