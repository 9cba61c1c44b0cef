"""Coalesced acks on RabbitMQ: thousands of messages finishing out of order, some handed
back, each settled once, the channel never closed (an ack of a tag already settled closes
it, and every unacked message comes again: the benchmark saw it under load, when a frame
overtook another in aiormq's write queue; tests/unit/test_acks.py shows that order kept)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aio_pika
import pytest

from backbone.broker import acks as acks_module
from backbone.broker.acks import MOST_WAITING, Acks
from backbone.broker.amqp import AmqpTransport
from backbone.broker.transport import Incoming

from .conftest import Pipeline
from .helpers import wait_for

pytestmark = pytest.mark.pipeline
COUNT = 3000


@pytest.mark.parametrize("most_waiting", [MOST_WAITING, 0])  # 0: most of them acked alone
async def test_acks_out_of_order_settle_each_message_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, most_waiting: int
) -> None:
    monkeypatch.setattr(acks_module, "MOST_WAITING", most_waiting)
    url = pipeline.url()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("acks-test", durable=True)
        exchange = channel.default_exchange
        await asyncio.gather(
            *(exchange.publish(aio_pika.Message(b"%d" % n), queue.name) for n in range(COUNT))
        )
        pace = random.Random(15)
        seen: Counter[bytes] = Counter()
        given_back: set[bytes] = set()
        acks = Acks()
        finished = asyncio.Event()

        handling: set[asyncio.Task[object]] = set()  # a frame another one decided waits too

        async def handle(message: Incoming) -> None:
            task = asyncio.current_task()
            assert task is not None
            handling.add(task)
            try:
                await handled(message)
            finally:
                handling.discard(task)

        async def idle() -> bool:
            return not handling

        async def handled(message: Incoming) -> None:
            acks.arrived(message)
            seen[message.body] += 1
            await asyncio.sleep(pace.random() * 0.005)  # finishing out of order
            if pace.random() < 0.05 and message.body not in given_back:
                given_back.add(message.body)
                await acks.handed_back(message, requeue=True)
                return
            await acks.done(message)
            if sum(seen.values()) == COUNT + len(given_back):
                finished.set()

        async with AmqpTransport(url).connect() as consuming:
            consumer = await consuming.consume(queue.name, handle, prefetch=128)
            await asyncio.wait_for(finished.wait(), 60)
            await wait_for(idle, 10)
            await consumer.cancel()
        twice = {body for body, times in seen.items() if times > 1}
        assert len(seen) == COUNT
        assert twice == given_back  # nothing else came again: the channel stayed open
        if most_waiting:
            assert acks.frames < (COUNT - len(given_back)) / 2  # they coalesced
        assert (
            await channel.declare_queue(queue.name, passive=True)
        ).declaration_result.message_count == 0
