"""The bare broker: one Python producer and one consumer, each its own process (aio-pika),
moving persistent, confirmed messages of the package size through one quorum queue."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from typing import Any

import aio_pika
from aio_pika.abc import DeliveryMode

from .. import loop
from . import _procs

QUEUE = "bench.baseline"
IN_FLIGHT = 1000  # unconfirmed publishes the producer keeps outstanding
PREFETCH = 1000


async def _declare(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.purge()


async def _consume(url: str, count: int, ready: Any, out: Any) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(QUEUE)
        latencies: list[float] = []
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            sent = float(message.headers["t"])  # type: ignore[arg-type]
            latencies.append(time.monotonic() - sent)
            await message.ack()
            if len(latencies) >= count:
                done.set()

        await queue.consume(on_message)
        ready.set()
        await done.wait()
        out.put({"last": time.monotonic(), "latencies": latencies})


async def _produce(url: str, size: int, count: int, out: Any) -> None:
    body = os.urandom(size)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        window = asyncio.Semaphore(IN_FLIGHT)
        first = time.monotonic()

        async def publish() -> None:
            try:
                message = aio_pika.Message(
                    body, delivery_mode=DeliveryMode.PERSISTENT, headers={"t": time.monotonic()}
                )
                await exchange.publish(message, routing_key=QUEUE)
            finally:
                window.release()

        tasks = []
        for _ in range(count):
            await window.acquire()
            tasks.append(asyncio.create_task(publish()))
        await asyncio.gather(*tasks)
        out.put({"first": first, "confirmed": time.monotonic()})


def _consumer(url: str, count: int, ready: Any, out: Any) -> None:
    loop.run(_consume(url, count, ready, out))


def _producer(url: str, size: int, count: int, out: Any) -> None:
    loop.run(_produce(url, size, count, out))


def run(
    url: str, size: int, count: int, broker_pgid: int | None, timeout: float = 300.0
) -> dict[str, Any]:
    """Messages per second from the first publish to the last message consumed, the
    latency of each (ms), and the broker's CPU time per message (on a private node)."""
    asyncio.run(_declare(url))
    broker_cpu = _procs.group_cpu_seconds(broker_pgid) if broker_pgid else 0.0
    context = multiprocessing.get_context("spawn")
    ready, consumed, produced = context.Event(), context.Queue(), context.Queue()
    consumer = context.Process(target=_consumer, args=(url, count, ready, consumed), daemon=True)
    consumer.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the baseline consumer did not start")
        producer = context.Process(target=_producer, args=(url, size, count, produced))
        producer.start()
        sent = produced.get(timeout=timeout)
        received = consumed.get(timeout=timeout)
        producer.join()
    finally:
        consumer.join(timeout=5)
        if consumer.is_alive():
            consumer.kill()
    seconds = received["last"] - sent["first"]
    if broker_pgid:
        broker_cpu = _procs.group_cpu_seconds(broker_pgid) - broker_cpu
    return {
        "broker_cpu_seconds_per_message": broker_cpu / count if broker_pgid else None,
        "messages": count,
        "size": size,
        "seconds": seconds,
        "per_second": count / seconds,
        "latencies_ms": [x * 1000 for x in received["latencies"]],
    }
