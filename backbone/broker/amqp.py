"""The broker seam on aio-pika: the production path of :mod:`backbone.broker.transport`.

One robust connection per ``connect()``: publishing on one channel with confirms and
``on_return_raises`` (a returned mandatory message is ``False``), consuming on a channel per
queue with its own prefetch, so that a refused queue (absent, or not ours to read) closes
that channel only. aio-pika's and aiormq's exceptions are mapped here to
:class:`~backbone.errors.BrokerError`, and never leave this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError, PublishError

from ..errors import BrokerRefused, BrokerUnreachable
from .transport import Handler, Incoming, Outgoing

# the link is down, or the channel with it: the broker may be back in a moment
GONE = (
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


@contextmanager
def mapped(what: str, *, connecting: bool = False) -> Iterator[None]:
    """aio-pika's errors as ours: a link or channel gone (and, ``connecting``, any failure
    to connect) is unreachable; what the broker refused (a channel it closed, a publish it
    did not confirm) is refused."""
    try:
        yield
    except GONE as exc:
        raise BrokerUnreachable(f"{what}: {_reason(exc)}") from exc
    except AMQPError as exc:
        failure = BrokerUnreachable if connecting else BrokerRefused
        raise failure(f"{what}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:300]


class AmqpMessage:
    """An aio-pika message behind :class:`~backbone.broker.transport.Incoming`."""

    __slots__ = ("_message",)

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def headers(self) -> Mapping[str, Any]:
        return self._message.headers or {}

    @property
    def routing_key(self) -> str | None:
        return self._message.routing_key

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def user_id(self) -> str | None:
        return self._message.user_id

    @property
    def type(self) -> str | None:
        return self._message.type

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def delivery_tag(self) -> int:
        return self._message.delivery_tag or 0

    async def ack(self, multiple: bool = False) -> None:
        with mapped("ack"):
            await self._message.ack(multiple=multiple)

    async def nack(self, requeue: bool = True) -> None:
        with mapped("nack"):
            await self._message.nack(requeue=requeue)

    async def reject(self, requeue: bool = False) -> None:
        with mapped("reject"):
            await self._message.reject(requeue=requeue)


class AmqpConsumer:
    def __init__(self, queue: AbstractQueue, tag: str) -> None:
        self._queue = queue
        self._tag = tag

    async def cancel(self) -> None:
        with mapped("cancel"):
            await self._queue.cancel(self._tag)


class AmqpConnection:
    """One connection: a confirming channel to publish on, a channel per consumed queue."""

    def __init__(self, connection: AbstractRobustConnection, channel: AbstractChannel) -> None:
        self._connection = connection
        self._channel = channel
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._queues: dict[str, AbstractQueue] = {}

    async def declared(self, *exchanges: str) -> None:
        with mapped("check the exchanges"):
            async with await self._connection.channel() as channel:
                for name in exchanges:
                    await channel.get_exchange(name, ensure=True)

    async def publish(self, exchange: str, message: Outgoing, *, mandatory: bool = False) -> bool:
        outgoing = aio_pika.Message(
            message.body,
            headers={k: v for k, v in message.headers.items() if v is not None},
            message_id=message.message_id,
            type=message.type,
            user_id=message.user_id,
            content_type=message.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            timestamp=message.timestamp,
        )
        with mapped(f"publish to {exchange}"):
            target = self._exchanges.get(exchange)
            if target is None:
                target = await self._channel.get_exchange(exchange, ensure=False)
                self._exchanges[exchange] = target
            try:
                await target.publish(outgoing, routing_key=message.routing_key, mandatory=mandatory)
            except PublishError:  # returned: it matched no queue (and no alternate took it)
                return False
        return True

    async def _queue(self, name: str, prefetch: int) -> AbstractQueue:
        """One channel per queue, kept: a consumer started again (the tracker's, after a
        pause) gets its deliveries on the same channel, so one ``ack(multiple=True)``
        covers those it held before. Declared passively on the robust channel, so that
        a reconnection restores its consumers (a queue made with ``ensure=False`` is
        forgotten then)."""
        queue = self._queues.get(name)
        if queue is None or queue.channel.is_closed:
            channel = await self._connection.channel()
            queue = await channel.get_queue(name, ensure=True)
            self._queues[name] = queue
        await queue.channel.set_qos(prefetch_count=prefetch)
        return queue

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> AmqpConsumer:
        async def on_message(message: AbstractIncomingMessage) -> None:
            await handler(AmqpMessage(message))

        with mapped(f"consume {queue}"):
            source = await self._queue(queue, prefetch)
            return AmqpConsumer(source, await source.consume(on_message))

    async def messages(
        self, queue: str, *, prefetch: int, timeout: float | None = None
    ) -> AsyncGenerator[Incoming, None]:
        """The channel stays open until the connection closes: a message yielded last may
        still be acked after the iteration ends."""
        with mapped(f"consume {queue}"):
            source = await self._queue(queue, prefetch)
            try:
                async with source.iterator(timeout=timeout) as iterator:
                    async for message in iterator:
                        yield AmqpMessage(message)
            except TimeoutError:
                return


class AmqpTransport:
    """Connections to the broker at ``url``; each gives up after ``connect_timeout`` seconds
    (a robust connection would retry forever what it cannot tell from a network fault, a
    malformed URL, and a black-holed host never answers), then reconnects by itself."""

    def __init__(self, url: str, *, connect_timeout: float = 30.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AmqpConnection]:
        connection = aio_pika.RobustConnection(make_url(self.url))
        try:
            with mapped("connect", connecting=True):
                await asyncio.wait_for(
                    connection.connect(timeout=self.connect_timeout), self.connect_timeout
                )
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()  # stops its reconnection task too
            raise
        try:
            yield AmqpConnection(connection, channel)
        finally:
            await connection.close()


__all__ = ["AmqpConnection", "AmqpMessage", "AmqpTransport", "mapped"]
