"""The plumbing floor: the four broker passages a document and its status 01 need, with no
checks at all, through minimal aio-pika relays.

The sender publishes the package-sized document to a quorum queue; relay 1 (consume,
publish with confirm, ack) moves it to the recipient's queue; the recipient answers with a
2 KB status; relay 2 moves that to the sender's queue, where the sender consumes it. Each
party is its own process, with the backbone's prefetch and confirms, so the backbone's
figures can be read as a ratio of what the plumbing alone allows on the same machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode

from .. import loop
from . import _procs

SUBMIT, INBOX, STATUS, ANSWERS = (
    f"bench.floor.{n}" for n in ("submit", "inbox", "status", "answers")
)
STATUS_SIZE = 2 * 1024
IN_FLIGHT = 1000  # as the benchmark's senders


async def _declare(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in (SUBMIT, INBOX, STATUS, ANSWERS):
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.purge()


async def _pass_on(
    url: str,
    source: str,
    prefetch: int,
    ready: Any,
    stop: Any,
    make: Callable[[AbstractIncomingMessage], tuple[bytes, str, dict[str, Any]]],
) -> None:
    """Consume ``source``; for each message publish what ``make`` says (confirmed), then
    ack: a relay, or the recipient answering."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(source)
        exchange = channel.default_exchange

        async def on_message(message: AbstractIncomingMessage) -> None:
            body, to, headers = make(message)
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=DeliveryMode.PERSISTENT, headers=headers),
                routing_key=to,
            )
            await message.ack()

        await queue.consume(on_message)
        ready.set()
        await asyncio.to_thread(stop.wait)


def _relay(url: str, source: str, target: str, prefetch: int, ready: Any, stop: Any) -> None:
    loop.run(
        _pass_on(url, source, prefetch, ready, stop, lambda m: (m.body, target, dict(m.headers)))
    )


def _recipient(url: str, prefetch: int, ready: Any, stop: Any) -> None:
    status = os.urandom(STATUS_SIZE)
    loop.run(
        _pass_on(url, INBOX, prefetch, ready, stop, lambda m: (status, STATUS, dict(m.headers)))
    )


async def _send_and_collect(url: str, size: int, count: int, prefetch: int) -> dict[str, Any]:
    body = os.urandom(size)
    connection = await aio_pika.connect(url)
    async with connection:
        publishing = await connection.channel(publisher_confirms=True)
        consuming = await connection.channel()
        await consuming.set_qos(prefetch_count=prefetch)
        latencies: list[float] = []
        done = asyncio.Event()

        async def on_answer(message: AbstractIncomingMessage) -> None:
            latencies.append(time.monotonic() - float(message.headers["t"]))  # type: ignore[arg-type]
            await message.ack()
            if len(latencies) >= count:
                done.set()

        await (await consuming.get_queue(ANSWERS)).consume(on_answer)
        window = asyncio.Semaphore(IN_FLIGHT)

        async def send() -> None:
            try:
                message = aio_pika.Message(
                    body, delivery_mode=DeliveryMode.PERSISTENT, headers={"t": time.monotonic()}
                )
                await publishing.default_exchange.publish(message, routing_key=SUBMIT)
            finally:
                window.release()

        first, cpu_at_first = time.monotonic(), time.process_time()
        tasks = []
        for _ in range(count):
            await window.acquire()
            tasks.append(asyncio.create_task(send()))
        await asyncio.gather(*tasks)
        await done.wait()
        last, cpu = time.monotonic(), time.process_time() - cpu_at_first
    return {"first": first, "last": last, "latencies": latencies, "cpu": cpu}


def _sender(url: str, size: int, count: int, prefetch: int, out: Any) -> None:
    out.put(loop.run(_send_and_collect(url, size, count, prefetch)))


def run(
    url: str,
    size: int,
    count: int,
    prefetch: int,
    broker_pgid: int | None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Documents a second from the first send to the last status consumed, the latency of
    each round trip (ms), and the CPU seconds per document of the broker and the relays
    (the server side) and of the sender and recipient (the clients)."""
    asyncio.run(_declare(url))
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    parties: dict[str, tuple[Callable[..., None], tuple[Any, ...]]] = {
        "relay 1": (_relay, (url, SUBMIT, INBOX, prefetch)),
        "relay 2": (_relay, (url, STATUS, ANSWERS, prefetch)),
        "recipient": (_recipient, (url, prefetch)),
    }
    started: dict[str, Any] = {}
    out = context.Queue()
    try:
        for name, (target, args) in parties.items():
            ready = context.Event()
            process = context.Process(target=target, args=(*args, ready, stop), daemon=True)
            process.start()
            started[name] = process
            if not ready.wait(60):
                raise RuntimeError(f"the plumbing floor's {name} did not start")
        sender = context.Process(target=_sender, args=(url, size, count, prefetch, out))
        before = _cpu(started, broker_pgid)
        sender.start()
        started["sender"] = sender
        result = _wait(out, started, timeout)
        after = _cpu(started, broker_pgid)
        after["sender"] = result["cpu"]  # its own count (from its first send): it may have exited
        sender.join()
    finally:
        stop.set()
        for process in started.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    server = sum(v for k, v in cpu.items() if k.startswith(("relay", "broker")))
    client = sum(v for k, v in cpu.items() if k in ("sender", "recipient"))
    seconds = result["last"] - result["first"]
    return {
        "documents": count,
        "size": size,
        "status_size": STATUS_SIZE,
        "prefetch": prefetch,
        "seconds": seconds,
        "per_second": count / seconds,
        "server_cpu_seconds_per_document": server / count if broker_pgid else None,
        "client_cpu_seconds_per_document": client / count,
        "cpu_seconds": cpu,
        "latencies_ms": [x * 1000 for x in result["latencies"]],
    }


def _cpu(processes: dict[str, Any], broker_pgid: int | None) -> dict[str, float]:
    cpu = {name: _procs.cpu_seconds(p.pid) for name, p in processes.items() if p.is_alive()}
    if broker_pgid:
        cpu["broker"] = _procs.group_cpu_seconds(broker_pgid)
    return cpu


def _wait(out: Any, processes: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The sender's result, failing early if a party dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result: dict[str, Any] = out.get(timeout=0.5)
            return result
        except queue.Empty:  # not yet
            dead = [n for n, p in processes.items() if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"the plumbing floor's {dead[0]} failed") from None
    raise RuntimeError(f"the plumbing floor did not finish in {timeout:.0f} s")
