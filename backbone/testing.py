"""An in-memory broker for fast, deterministic tests of the backbone's own logic.

It implements :mod:`backbone.broker.transport` with the backbone's topology
(:func:`backbone.broker.topology.backbone`, the same data ``backbone init`` declares on
RabbitMQ) and the parts of RabbitMQ the backbone relies on:

- topic and fanout exchanges (topic matching by :func:`backbone.agency.topic_matches`, as
  RabbitMQ does it), the alternate exchange of ``edoc.deliver``, mandatory publishes
  returned when nothing takes them;
- ``user_id`` checked against the connection's user, as RabbitMQ validates it;
- per-consumer prefetch, each message handled in a task of its own, ``ack(multiple=True)``;
- quorum queues' delivery limit: a message handed back more than ``x-delivery-limit``
  times is dead-lettered, like one rejected, to ``backbone.dlx`` (the quarantine); a
  connection closed with messages unsettled hands them back.

``await broker.join()`` waits until every consumed queue is drained and every handler has
finished, and re-raises the first exception a handler let escape (like dramatiq's
``StubBroker.join``): a test then knows that nothing more will happen, without sleeping.
What it does not do (permissions, clustering, persistence across restarts, confirms that
fail) only a real RabbitMQ can prove: those tests live in ``tests/pipeline``.

    broker = MemoryBroker()
    broker.declare_inbox("000.00.00.H41")
    validator = Validator.from_settings(settings, transport=broker.transport("backbone"))
    async with validator.running():
        async with broker.transport(SENDER).connect() as connection:
            await connection.publish(topology.SUBMIT, Outgoing(body, SENDER, user_id=SENDER))
        await broker.join()
    assert len(broker.take(topology.inbox("000.00.00.H41"))) == 1
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from aio_pika.abc import ExchangeType

from .agency import topic_matches
from .broker import topology
from .broker.transport import Handler, Incoming, Outgoing
from .errors import BrokerRefused

JOIN_TIMEOUT = 30.0  # seconds join() waits for the queues to drain before it says what is stuck


@dataclass(frozen=True, slots=True)
class Message:
    """A message as a queue holds it."""

    body: bytes
    routing_key: str
    exchange: str  # where it was published (a dead-lettered one: still its first exchange)
    message_id: str | None = None
    type: str | None = None
    user_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_count: int = 0  # times handed back (quorum queues' x-delivery-count)


@dataclass
class _Queue:
    name: str
    delivery_limit: int | None
    dead_letter_exchange: str | None
    ready: deque[Message] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)
    turn: int = 0  # round robin between consumers


@dataclass(eq=False)
class _Channel:
    """What a connection consumes one queue on: delivery tags are counted per channel, and
    ``ack(multiple=True)`` settles every earlier delivery of the channel, whichever of
    its consumers (a paused one, a resumed one) took it."""

    queue: _Queue
    tags: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    unsettled: dict[int, tuple[_Consumer, Message]] = field(default_factory=dict)


@dataclass(eq=False)
class _Consumer:
    channel: _Channel
    connection: MemoryConnection
    handler: Handler
    prefetch: int
    held: int = 0  # unsettled deliveries it took

    @property
    def queue(self) -> _Queue:
        return self.channel.queue


class MemoryMessage:
    """A delivered message behind :class:`~backbone.broker.transport.Incoming`."""

    def __init__(self, broker: MemoryBroker, consumer: _Consumer, tag: int, message: Message):
        self._broker = broker
        self._consumer = consumer
        self._tag = tag
        self._message = message

    body = property(lambda self: self._message.body)
    headers = property(lambda self: self._message.headers)
    routing_key = property(lambda self: self._message.routing_key)
    message_id = property(lambda self: self._message.message_id)
    user_id = property(lambda self: self._message.user_id)
    type = property(lambda self: self._message.type)
    redelivered = property(lambda self: self._message.delivery_count > 0)
    delivery_tag = property(lambda self: self._tag)

    def _settle(self, tag: int) -> Message:
        consumer, message = self._consumer.channel.unsettled.pop(tag)
        consumer.held -= 1
        return message

    def _take(self) -> Message:
        if self._consumer.connection.closed:
            raise BrokerRefused("settle: the connection is closed")
        if self._tag not in self._consumer.channel.unsettled:
            raise BrokerRefused(f"PRECONDITION_FAILED - unknown delivery tag {self._tag}")
        return self._settle(self._tag)

    async def ack(self, multiple: bool = False) -> None:
        self._take()
        if multiple:
            for tag in [t for t in self._consumer.channel.unsettled if t < self._tag]:
                self._settle(tag)
        self._broker._wake(self._consumer.queue)

    async def nack(self, requeue: bool = True) -> None:
        message = self._take()
        if requeue:
            self._broker._hand_back(self._consumer.queue, message)
        else:
            self._broker._dead_letter(self._consumer.queue, message)
        self._broker._wake(self._consumer.queue)

    async def reject(self, requeue: bool = False) -> None:
        await self.nack(requeue=requeue)


class _Subscription:
    def __init__(self, consumer: _Consumer) -> None:
        self._consumer = consumer

    async def cancel(self) -> None:
        """No new deliveries; what it holds stays unsettled, as on RabbitMQ."""
        consumers = self._consumer.queue.consumers
        if self._consumer in consumers:
            consumers.remove(self._consumer)


class MemoryConnection:
    def __init__(self, broker: MemoryBroker, user: str) -> None:
        self.broker = broker
        self.user = user
        self.closed = False
        self.channels: dict[str, _Channel] = {}  # one per queue, as broker.amqp keeps them

    def _check(self) -> None:
        if self.closed:
            raise BrokerRefused("the connection is closed")

    async def declared(self, *exchanges: str) -> None:
        self._check()
        for name in exchanges:
            if name not in self.broker.exchanges:
                raise BrokerRefused(f"NOT_FOUND - no exchange {name!r}")

    async def publish(self, exchange: str, message: Outgoing, *, mandatory: bool = False) -> bool:
        self._check()
        if message.user_id is not None and message.user_id != self.user:
            raise BrokerRefused(
                f"PRECONDITION_FAILED - user_id property set to {message.user_id!r} "
                f"but authenticated user was {self.user!r}"
            )
        stored = Message(
            message.body,
            message.routing_key,
            exchange,
            message.message_id,
            message.type,
            message.user_id,
            {k: v for k, v in message.headers.items() if v is not None},
        )
        return self.broker._publish(exchange, stored) or not mandatory

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> _Subscription:
        self._check()
        channel = self.channels.get(queue)
        if channel is None:
            channel = self.channels[queue] = _Channel(self.broker._queue(queue))
        consumer = _Consumer(channel, self, handler, prefetch)
        consumer.queue.consumers.append(consumer)
        self.broker._wake(consumer.queue)
        return _Subscription(consumer)

    async def messages(
        self, queue: str, *, prefetch: int, timeout: float | None = None
    ) -> AsyncGenerator[Incoming, None]:
        """Ended early, it hands back what it took and did not yield, as aio-pika's queue
        iterator does (each such return counts towards the delivery limit)."""
        arrived: asyncio.Queue[Incoming] = asyncio.Queue()

        async def put(message: Incoming) -> None:
            await arrived.put(message)

        subscription = await self.consume(queue, put, prefetch=prefetch)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(arrived.get(), timeout)
                except TimeoutError:
                    return
        finally:
            await subscription.cancel()
            while not arrived.empty() and not self.closed:
                await arrived.get_nowait().nack(requeue=True)

    def close(self) -> None:
        """Everything unsettled goes back to its queue, as when a channel closes."""
        self.closed = True
        for channel in self.channels.values():
            held, channel.unsettled = channel.unsettled, {}
            for _, (_, message) in sorted(held.items(), reverse=True):
                self.broker._hand_back(channel.queue, message)
            channel.queue.consumers = [
                c for c in channel.queue.consumers if c.connection is not self
            ]
            self.broker._wake(channel.queue)
        self.broker._closed(self)


class MemoryTransport:
    """Connections to a :class:`MemoryBroker` as ``user``."""

    def __init__(self, broker: MemoryBroker, user: str) -> None:
        self.broker = broker
        self.user = user

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MemoryConnection]:
        connection = MemoryConnection(self.broker, self.user)
        self.broker.connections.append(connection)
        try:
            yield connection
        finally:
            connection.close()


class MemoryBroker:
    """The backbone's topology in memory; see the module's docstring."""

    def __init__(self, delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT) -> None:
        self.delivery_limit = delivery_limit
        self.exchanges: dict[str, topology.Exchange] = {}
        self.queues: dict[str, _Queue] = {}
        self.bindings: dict[str, list[tuple[str, str]]] = {}  # exchange -> (queue, key)
        self.connections: list[MemoryConnection] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []
        self._changed = asyncio.Event()
        exchanges, queues = topology.backbone(delivery_limit)
        for exchange in exchanges:
            self.exchanges[exchange.name] = exchange
            self.bindings[exchange.name] = []
        for queue in queues:
            self.declare_queue(queue.name, queue.arguments)
            for source, key in queue.bindings:
                self.bind(queue.name, source, key)

    # --- declaring, as topology does on RabbitMQ ------------------------------------------

    def declare_queue(self, name: str, arguments: Mapping[str, Any] | None = None) -> None:
        if name in self.queues:
            return
        arguments = arguments if arguments is not None else topology.quorum(self.delivery_limit)
        limit = arguments.get("x-delivery-limit")
        dead_letter = arguments.get("x-dead-letter-exchange")
        self.queues[name] = _Queue(
            name,
            int(limit) if isinstance(limit, int) else None,
            str(dead_letter) if dead_letter else None,
        )

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        if (queue, routing_key) not in self.bindings[exchange]:
            self.bindings[exchange].append((queue, routing_key))

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        self.bindings[exchange].remove((queue, routing_key))

    def declare_inbox(self, code: str) -> str:
        """An agency's inbox bound with its identifier (``topology.declare_inbox``)."""
        name = topology.inbox(code)
        self.declare_queue(name)
        self.bind(name, topology.DELIVER, code)
        return name

    def transport(self, user: str) -> MemoryTransport:
        return MemoryTransport(self, user)

    # --- what tests look at ---------------------------------------------------------------

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those held by a consumer)."""
        return len(self._queue(queue).ready)

    def take(self, queue: str) -> list[Message]:
        """Remove and return what is ready in ``queue``."""
        ready = self._queue(queue).ready
        taken = list(ready)
        ready.clear()
        return taken

    async def join(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Wait until no consumed queue holds a message and no handler runs; re-raise the
        first exception a handler let escape. Past ``timeout`` seconds, say what waits."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._raise_failure()
                    if self._idle():
                        await asyncio.sleep(0)  # let settled handlers' callers resume
                        if self._idle():
                            self._raise_failure()
                            return
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"not drained after {timeout:g} s: {self._busy()}") from None

    def _busy(self) -> str:
        held: dict[str, int] = {}
        for connection in self.connections:
            for name, channel in connection.channels.items():
                held[name] = held.get(name, 0) + len(channel.unsettled)
        parts = [
            f"{q.name}: {len(q.ready)} ready, {held.get(q.name, 0)} unsettled"
            for q in self.queues.values()
            if q.ready or held.get(q.name)
        ]
        return "; ".join([*parts, f"{len(self._tasks)} handlers running"])

    def _idle(self) -> bool:
        if self._tasks:
            return False
        if any(c.unsettled for conn in self.connections for c in conn.channels.values()):
            return False
        return not any(queue.ready and queue.consumers for queue in self.queues.values())

    def _closed(self, connection: MemoryConnection) -> None:
        self.connections.remove(connection)

    def _raise_failure(self) -> None:
        if self._failures:
            failure, self._failures = self._failures[0], []
            raise failure

    # --- the broker's inside --------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        try:
            return self.queues[name]
        except KeyError:
            raise BrokerRefused(f"NOT_FOUND - no queue {name!r}") from None

    def _route(self, exchange: str, routing_key: str) -> list[str]:
        spec = self.exchanges.get(exchange)
        if spec is None:
            raise BrokerRefused(f"NOT_FOUND - no exchange {exchange!r}")
        if spec.type is ExchangeType.FANOUT:
            matched = [queue for queue, _ in self.bindings[exchange]]
        else:
            matched = [q for q, key in self.bindings[exchange] if topic_matches(key, routing_key)]
        alternate = spec.arguments.get("alternate-exchange")
        if not matched and isinstance(alternate, str):
            return self._route(alternate, routing_key)
        return list(dict.fromkeys(matched))

    def _publish(self, exchange: str, message: Message) -> bool:
        """Enqueue where the exchange routes it; False if no queue took it."""
        queues = self._route(exchange, message.routing_key)
        for name in queues:
            self.queues[name].ready.append(message)
            self._wake(self.queues[name])
        return bool(queues)

    def _hand_back(self, queue: _Queue, message: Message) -> None:
        returned = replace(message, delivery_count=message.delivery_count + 1)
        if queue.delivery_limit is not None and returned.delivery_count > queue.delivery_limit:
            self._dead_letter(queue, returned)
        else:
            queue.ready.appendleft(returned)

    def _dead_letter(self, queue: _Queue, message: Message) -> None:
        if queue.dead_letter_exchange is not None:
            headers = {**message.headers, "x-first-death-queue": queue.name}
            self._publish(queue.dead_letter_exchange, replace(message, headers=headers))

    def _wake(self, queue: _Queue) -> None:
        """Hand ready messages to consumers with room, round robin, each in a task."""
        while queue.ready:
            ready = [c for c in queue.consumers if c.held < c.prefetch]
            if not ready:
                break
            consumer = ready[queue.turn % len(ready)]
            queue.turn += 1
            message = queue.ready.popleft()
            tag = next(consumer.channel.tags)
            consumer.channel.unsettled[tag] = (consumer, message)
            consumer.held += 1
            task = asyncio.get_running_loop().create_task(
                self._handle(consumer, MemoryMessage(self, consumer, tag, message))
            )
            self._tasks.add(task)
        self._changed.set()

    async def _handle(self, consumer: _Consumer, message: MemoryMessage) -> None:
        try:
            await consumer.handler(message)
        except Exception as exc:  # a handler's bug: join() raises it in the test
            self._failures.append(exc)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._changed.set()


__all__ = ["MemoryBroker", "MemoryConnection", "MemoryMessage", "MemoryTransport", "Message"]
