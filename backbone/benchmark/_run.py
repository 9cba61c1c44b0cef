"""One measured configuration: N validator processes and the tracker, fed by the senders'
SDKs, drained by the recipients' SDKs, watched in the store.

Times are ``time.monotonic()``, one clock for every process on the machine. (a) is when a
recipient's handler has the package; (b) when the status 01 it answered is committed, seen
by polling the events table every ``POLL`` seconds (so (b) is late by half that, on average).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
from sqlalchemy import select

from ..broker import topology
from ..client import AsyncGateway
from ..config import Settings
from ..events import Kind
from ..store import Store
from ..store.models import EventRecord as EventRow
from . import _procs
from ._recipients import Arrivals, Recipients
from ._world import World

POLL = 0.01
IN_FLIGHT = 1000  # unconfirmed submissions outstanding when sending as fast as possible
STALL = 60.0  # seconds without progress before a run is called stuck


@dataclass(frozen=True, slots=True)
class Package:
    document_id: str
    sender: str
    recipients: tuple[str, ...]
    body: bytes


@dataclass
class Phase:
    """The raw timings of one batch of packages."""

    name: str
    packages: list[Package]
    offered: float | None  # documents a second; None: as fast as possible
    drained_from: float | None = None  # a backlog: when the validators started on it
    sent: dict[str, float] = field(default_factory=dict)
    recorded: dict[tuple[str, str], float] = field(default_factory=dict)
    arrived: Arrivals = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(p.document_id, r) for p in self.packages for r in p.recipients]

    @property
    def seconds(self) -> float:
        """From the first send (or for a backlog, the validators' start) to the last status
        01 recorded."""
        start = self.drained_from if self.drained_from is not None else min(self.sent.values())
        return max(self.recorded.values()) - start


class Watcher:
    """Polls the store for statuses 01 (and rejections, which mean the setup is wrong)."""

    def __init__(self, database_url: str) -> None:
        self.store = Store(database_url)
        self.recorded: dict[tuple[str, str], float] = {}
        self.order: list[tuple[str, str]] = []  # the pairs of ``recorded``, as they came
        self.rejections: list[str] = []
        self._last = 0
        self._stopping = False

    async def run(self) -> None:
        query = select(
            EventRow.id,
            EventRow.kind,
            EventRow.status_code,
            EventRow.edxml_document_id,
            EventRow.recipient,
            EventRow.reason_code,
            EventRow.description,
        )
        while not self._stopping:
            async with self.store.sessions() as session:
                rows = (
                    await session.execute(
                        query.where(EventRow.id > self._last).order_by(EventRow.id)
                    )
                ).all()
            now = time.monotonic()
            for row in rows:
                self._last = row.id
                if row.kind == Kind.STATUS.value and row.status_code == "01":
                    pair = (row.edxml_document_id or "", row.recipient or "")
                    if pair not in self.recorded:
                        self.order.append(pair)
                    self.recorded[pair] = now
                elif row.kind == Kind.REJECTED.value:
                    self.rejections.append(f"{row.reason_code}: {row.description}")
            await asyncio.sleep(POLL)

    async def close(self) -> None:
        self._stopping = True
        await self.store.close()


@dataclass
class Configuration:
    """``processes`` validators and the tracker on ``database_url``, measured phase by phase."""

    world: World
    settings: Settings
    processes: int
    prefetch: int
    logs: Path
    broker_pgid: int | None = None
    local_postgres: bool = False  # its server's CPU counts too

    async def __aenter__(self) -> Configuration:
        self._stack = contextlib.AsyncExitStack()
        try:
            await self._start(self._stack)
        except BaseException:  # stop whatever had started, then fail
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        """The workers, the recipients, the senders and the watcher; each is stopped, in
        reverse order, when the configuration ends."""
        self.workers = _procs.Workers(self.settings, self.processes, self.prefetch, self.logs)
        stack.push_async_callback(asyncio.to_thread, self.workers.stop)
        await asyncio.to_thread(self.workers.start)
        world = self.world
        self.recipients = Recipients(
            {
                code: (
                    world.url(code),
                    str(world.issued[code].key),
                    str(world.issued[code].certificate),
                )
                for code in world.recipients
            }
        )
        await asyncio.to_thread(self.recipients.start)
        stack.callback(self.recipients.close)
        await self._consumers_ready()
        self.senders: dict[str, AsyncGateway] = {}
        for code in world.senders:
            gateway = AsyncGateway(world.url(code), username=code)
            self.senders[code] = await stack.enter_async_context(gateway)
        self.watcher = Watcher(self.settings.database_url)
        self.watching = asyncio.create_task(self.watcher.run())

        async def stop_watching() -> None:
            await self.watcher.close()
            await self.watching

        stack.push_async_callback(stop_watching)

    async def _consumers_ready(self, timeout: float = 60.0) -> None:
        """Until every validator and the tracker consume (they log in as they start)."""
        deadline = time.monotonic() + timeout
        connection = await aio_pika.connect(self.world.url())
        async with connection:
            channel = await connection.channel()
            while True:
                self.workers.check_alive()
                validate = await channel.declare_queue(topology.VALIDATE, passive=True)
                tracker = await channel.declare_queue(topology.TRACKER, passive=True)
                counts = (
                    validate.declaration_result.consumer_count,
                    tracker.declaration_result.consumer_count,
                )
                if counts == (self.processes, 1):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the workers did not start consuming in {timeout:.0f} s")
                await asyncio.sleep(0.2)

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process involved."""
        cpu = {w.name: _procs.cpu_seconds(w.pid) for w in self.workers.running}
        cpu["recipients (SDK)"] = _procs.cpu_seconds(self.recipients.pid)
        cpu["senders (SDK) and watcher"] = _procs.cpu_seconds(os.getpid())
        if self.broker_pgid is not None:
            cpu["broker"] = _procs.group_cpu_seconds(self.broker_pgid)
        if self.local_postgres:
            cpu["PostgreSQL"] = _procs.named_cpu_seconds("postgres")
        return cpu

    async def phase(
        self,
        name: str,
        packages: list[Package],
        offered: float | None,
        advance: Callable[[int], None] = lambda _: None,
    ) -> Phase:
        """Send ``packages`` (paced at ``offered`` a second, or all at once) and wait until
        every recipient's status 01 is recorded."""
        phase = Phase(name, packages, offered)
        before = self._cpu()
        sending = asyncio.create_task(self._send(phase))
        await self._until_recorded(phase, sending, advance)
        after = self._cpu()
        phase.cpu = {k: after[k] - before[k] for k in after}
        phase.recorded = {pair: self.watcher.recorded[pair] for pair in phase.pairs}
        return phase

    async def backlog(
        self, name: str, packages: list[Package], advance: Callable[[int], None] = lambda _: None
    ) -> Phase:
        """Queue ``packages`` while the validators are stopped, then start them and wait
        until every status 01 is recorded: how fast a backlog drains, and in how much
        memory (the validators' peak is then the drain's)."""
        await asyncio.to_thread(self.workers.stop_validators)
        phase = Phase(name, packages, None)
        await self._send(phase)  # every one confirmed, waiting in backbone.validate
        before = self._cpu()
        phase.drained_from = time.monotonic()
        await asyncio.to_thread(self.workers.start_validators)
        await self._until_recorded(phase, None, advance)
        after = self._cpu()
        phase.cpu = {k: after[k] - before.get(k, 0.0) for k in after}
        phase.recorded = {pair: self.watcher.recorded[pair] for pair in phase.pairs}
        return phase

    async def _until_recorded(
        self, phase: Phase, sending: asyncio.Task[None] | None, advance: Callable[[int], None]
    ) -> None:
        """Until every recipient's status 01 is recorded (and ``sending`` has ended). Each
        round looks at what was recorded since the last; progress is a 01 recorded or a
        package delivered (a backlog's statuses queue behind its documents)."""
        name, expected = phase.name, set(phase.pairs)
        done, last_progress = 0, time.monotonic()
        cursor, arrived = 0, self.recipients.arrived
        while done < len(expected):
            await asyncio.sleep(0.05)
            self.workers.check_alive()
            self.recipients.check_alive()
            if self.watching.done():  # it ends only when told, or on an error: raise it
                self.watching.result()
                raise RuntimeError("the watcher stopped polling the store")
            if self.watcher.rejections:
                raise RuntimeError(
                    f"the backbone rejected a benchmark package: {self.watcher.rejections[0]}"
                )
            order = self.watcher.order
            now_done = done + sum(1 for pair in order[cursor:] if pair in expected)
            cursor = len(order)
            if now_done > done or self.recipients.arrived > arrived:
                advance(now_done - done)
                done, last_progress = now_done, time.monotonic()
                arrived = self.recipients.arrived
            elif time.monotonic() - last_progress > STALL:
                raise RuntimeError(
                    f"{name}: {done} of {len(expected)} statuses 01 recorded, nothing recorded"
                    f" or delivered for {STALL:.0f} s; {len(phase.sent)} sent, {arrived} in the "
                    f"recipients' hands in all; the workers' logs are in {self.logs}"
                    + self.workers.complaints()
                )
            if sending is not None and sending.done() and sending.exception() is not None:
                raise sending.exception()  # type: ignore[misc]
        if sending is not None:
            await sending

    async def _send(self, phase: Phase) -> None:
        window = asyncio.Semaphore(IN_FLIGHT)
        tasks: list[asyncio.Task[None]] = []

        async def send(package: Package) -> None:
            try:
                phase.sent[package.document_id] = time.monotonic()
                await self.senders[package.sender].send(package.body)
            finally:
                window.release()

        start = time.monotonic()
        for index, package in enumerate(phase.packages):
            if phase.offered is not None:
                delay = start + index / phase.offered - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            tasks.append(asyncio.create_task(send(package)))
        await asyncio.gather(*tasks)

    def peaks(self) -> dict[str, float]:
        peaks = self.workers.peaks()
        peaks["recipients (SDK)"] = _procs.peak_mib(self.recipients.pid)
        return peaks

    async def arrivals(self) -> Arrivals:
        """Stop the recipients and collect when each package reached them."""
        return await asyncio.to_thread(self.recipients.stop)


def stamp(phases: list[Phase], arrived: Arrivals) -> None:
    for phase in phases:
        phase.arrived = {pair: arrived[pair] for pair in phase.pairs if pair in arrived}


__all__ = ["Configuration", "Package", "Phase", "stamp"]
