"""What every worker shares: connecting, consuming its queue, the transient faults it
waits out, and stopping without losing what it holds.

    async with validator.running():     # connected and consuming when this returns
        await stopped.wait()
    # the consumer was cancelled, the messages held were finished (or handed back after
    # STOP_TIMEOUT), the connection and the worker's store are closed

A worker reaches the broker through a :class:`~backbone.broker.transport.Transport`: the
aio-pika one in production, :mod:`backbone.testing`'s in memory in fast tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self

from sqlalchemy.exc import SQLAlchemyError

from ..broker.acks import Acks
from ..broker.amqp import AmqpTransport
from ..broker.transport import Connection, Consumer, Incoming, Transport
from ..config import Settings
from ..errors import BrokerError, BrokerRefused
from ..logs import get_logger
from ..store import Store
from .publisher import Publisher, Signer

# what a worker waits out instead of giving up on a message: the database or the broker
# gone for a while
TRANSIENT = (SQLAlchemyError, BrokerError, ConnectionError, OSError, asyncio.TimeoutError)
STOP_TIMEOUT = 30.0  # seconds a stopping worker gives the messages it holds
# bodies held unsettled past which a worker stops consuming: a validator checking a 1 MB
# package holds about five times its size (tree, models, what the signature covers), and
# the tracker's events about five times their JSON, so a few of those at a time (or the
# prefetch count's worth of small ones: 16 MB let the tracker reach 184 MB draining a
# backlog of 50,000, 4 MB 153 MB)
BYTE_BUDGET = 4 * 1024 * 1024
# the body size a window is made for: the largest lately, fading by this much a message
# (sized for the average, a stream of small statuses between 1 MB packages let 23 MB in)
SIZE_FADING = 1 / 64
RESUME_PAUSE = 1.0  # seconds before consuming is tried again when the broker refused it
DISPATCH_TURNS = 4  # event-loop turns a delivery takes from aiormq to the worker, and more
CANCEL_TIMEOUT = 5.0  # then seconds for the cancelled ones to let go of their connections


class Worker:
    """A consumer of ``queue`` that publishes as the backbone (``publisher``, from the
    moment it is connected): subclasses give ``handle`` (called for each message, in a
    task of its own) and, if they need them, ``started`` and ``stopping``.

    A byte budget bounds its memory where a prefetch count cannot (RabbitMQ has no
    ``prefetch_size``): past ``byte_budget`` bytes of bodies held unsettled it stops
    consuming, and it consumes again once they are down to half, with a prefetch window
    (``window``) that the budget holds at the largest bodies lately; it starts at one, and
    grows (to ``prefetch`` at most) when the budget would hold twice as many."""

    queue: str  # the queue it consumes (a class's, or an instance's)
    name: ClassVar[str]
    required: ClassVar[bool] = True  # False: a queue it may not read is logged, not fatal

    def __init__(
        self,
        settings: Settings,
        signer: Signer | None,
        *,
        transport: Transport | None,
        prefetch: int,
        stores: Sequence[Store] = (),
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.transport = transport or AmqpTransport(settings.amqp_url)
        self.prefetch = prefetch
        self.stores = list(stores)
        self._publisher: Publisher | None = None
        self.log = get_logger(f"backbone.{self.name}")
        self._connection: Connection | None = None
        self._consumer: Consumer | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._closing = False  # no consuming again: the worker is stopping
        self._consume_lock = asyncio.Lock()  # one consumer at a time, whoever starts it
        self.failed: asyncio.Future[None] | None = None  # a task of its own died
        self.acks = Acks()  # every delivery is registered here as it arrives
        self.byte_budget = BYTE_BUDGET
        # the prefetch count consumed with: from 1, it grows to what the budget holds at the
        # first bodies' size, so that a burst of large ones never fills a whole prefetch
        self.window = 1
        self.pauses = 0  # times the byte budget stopped the deliveries
        self._body_size = 0.0  # the largest body lately (see SIZE_FADING)
        self._resuming: asyncio.Task[None] | None = None  # retrying a refused resume

    async def handle(self, message: Incoming) -> None:
        raise NotImplementedError

    async def started(self, connection: Connection) -> None:
        """Connected, not consuming yet: its publisher ready (the exchanges exist)."""
        self._publisher = Publisher(connection, self.settings, self.signer)
        await self._publisher.ready()

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "publishing outside running()"
        return self._publisher

    async def stopping(self) -> None:
        """The consumer is cancelled; finish what is buffered."""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Connected and consuming inside; everything closed after."""
        self._closing = False
        self.failed = asyncio.get_running_loop().create_future()
        try:
            async with self.transport.connect() as connection:
                self._connection = connection
                try:  # whatever fails, what ``started`` began is stopped
                    await self.started(connection)
                    await self._consume_or_log()
                    yield self
                finally:
                    await self.stop_consuming()
                    await self._let_dispatched_start()
                    await self.stopping()
                    await self._finish_in_flight()
        finally:
            self._connection = self._publisher = None
            for store in self.stores:
                await store.close()
            self.log.info(f"{self.name} stopped")

    async def _consume_or_log(self) -> None:
        try:
            await self.resume()
        except BrokerRefused as exc:
            if self.required:
                raise
            self.log.error(
                f"cannot consume {self.queue}; the {self.name} does nothing", error=str(exc)
            )
        else:
            self.log.info(
                f"{self.name} consuming",
                queue=self.queue,
                prefetch=self.prefetch,
                byte_budget=self.byte_budget,
            )

    async def resume(self) -> None:
        """Start (or start again) taking deliveries; nothing once it is stopping."""
        assert self._connection is not None, "resume() outside running()"
        async with self._consume_lock:
            if self._consumer is None and not self._closing:
                self.acks.fit(self.window)
                self._consumer = await self._connection.consume(
                    self.queue, self._on_message, prefetch=self.window
                )
                self.log.debug(f"{self.name} consuming", window=self.window)

    async def pause(self) -> bool:
        """No new deliveries for now; those held stay unsettled. False: not consuming."""
        async with self._consume_lock:
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                with contextlib.suppress(BrokerError):  # a lost channel stops them anyway
                    await consumer.cancel()
            return consumer is not None

    async def stop_consuming(self) -> None:
        """No new deliveries, for good: the first step of stopping."""
        self._closing = True
        await self.pause()  # after a resume under way (the lock): its consumer is cancelled
        if self._resuming is not None:
            self._resuming.cancel()

    def fail(self, error: BaseException) -> None:
        """A task of the worker's own died: whoever runs the worker stops it (``serve``
        ends the process, which is then restarted) rather than let it look alive."""
        self.log.error(f"{self.name} failed", error=repr(error)[:300])
        if self.failed is not None and not self.failed.done():
            self.failed.set_exception(error)

    @property
    def consuming(self) -> bool:
        return self._consumer is not None

    @property
    def held(self) -> int:
        """Bytes of the bodies received and not yet settled."""
        return self.acks.held

    async def _on_message(self, message: Incoming) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        self.acks.arrived(message)
        self._body_size = max(len(message.body), self._body_size * (1 - SIZE_FADING))
        try:
            if self.consuming:
                await self._fit_window()
            await self.handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)
            await self.within_budget()

    async def _fit_window(self) -> None:
        """Past the budget, stop consuming, to consume again with the window it holds; a
        window it would hold twice over (the bodies got smaller), or the whole prefetch, is
        taken at once."""
        fitting = int(self.byte_budget / max(self._body_size, 1.0))
        fitting = max(1, min(self.prefetch, fitting))
        if self.held > self.byte_budget:
            self.window = fitting
            if await self.pause():
                self.pauses += 1
                self.log.debug(
                    f"{self.name} paused: byte budget reached", held=self.held, window=fitting
                )
        elif fitting >= 2 * self.window or self.window < fitting == self.prefetch:
            self.window = fitting
            await self.pause()
            await self.within_budget()

    async def within_budget(self) -> None:
        """Paused by the budget and what is held down to half: consume again (if the
        broker refuses, again every RESUME_PAUSE in the background, so that a worker
        with nothing left in flight is not left paused)."""
        if self.consuming or self._closing or self.held > self.byte_budget // 2:
            return
        if self._resuming is not None and not self._resuming.done():
            return
        try:
            await self.resume()
        except BrokerError as exc:
            self.log.warning("cannot consume again yet", error=str(exc)[:300])
            self._resuming = asyncio.create_task(self._resume_until_consuming())

    async def _resume_until_consuming(self) -> None:
        while not (self.consuming or self._closing):
            await asyncio.sleep(RESUME_PAUSE)
            with contextlib.suppress(BrokerError):
                await self.resume()

    async def _let_dispatched_start(self) -> None:
        """A delivery that came before the broker's cancel-ok reaches ``_on_message``
        through two tasks (aiormq's, then aio-pika's): let those start, so that what they
        hold is finished too instead of being handed back silently when the connection
        closes."""
        for _ in range(DISPATCH_TURNS):
            await asyncio.sleep(0)

    async def _finish_in_flight(self) -> None:
        """Finish what was started; past STOP_TIMEOUT, cancel the rest (unacked, so the
        broker redelivers it) and wait CANCEL_TIMEOUT for them to let go of their database
        connections: one still checked out when the store closes keeps its thread, and the
        process, alive. The warning says where each was waiting."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(self._in_flight, timeout=STOP_TIMEOUT)
        if pending:
            self.log.warning(
                "stopping: messages not finished are handed back",
                count=len(pending),
                waiting_in=sorted({awaiting(task) for task in pending})[:5],
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CANCEL_TIMEOUT)

    async def settle(self, message: Incoming, requeue: bool | None = None) -> None:
        """Ack, with the earlier finished ones where the order allows (or nack for a
        retry); a lost channel means the broker redelivers anyway."""
        if requeue is None:
            await self.acks.done(message)
        else:
            await self.acks.handed_back(message, requeue=requeue)

    async def quarantine(self, message: Incoming) -> None:
        """Dead-letter it into backbone.quarantine (kept for a replay), never to be acked."""
        await self.acks.handed_back(message, requeue=False)


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its chain of awaited coroutines (``handle:180>_process:204...``)."""
    where: list[str] = []
    coro: Any = task.get_coro()
    while getattr(coro, "cr_frame", None) is not None:
        where.append(f"{coro.cr_code.co_name}:{coro.cr_frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return ">".join(where)
