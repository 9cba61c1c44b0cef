"""The seam between the backbone's code and a broker: what the workers and the SDK need of
one, and nothing more.

A worker needs, of each message it consumes, its body, a few properties and a way to settle
it; of the broker, a confirmed publish and a consumer with a prefetch. ``Transport`` is
that contract. :mod:`backbone.broker.amqp` implements it on aio-pika (the production path),
:mod:`backbone.testing` in memory (fast, deterministic tests of the same code).

Publishing is always confirmed: ``publish`` returns once the broker has taken the message,
True if it was routed, False if it was mandatory and returned unroutable, and raises
:class:`~backbone.errors.BrokerError` if the broker refused it or the connection is lost.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class Incoming(Protocol):
    """A message being consumed; settle it exactly once."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any]: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def delivery_tag(self) -> int: ...

    async def ack(self, multiple: bool = False) -> None:
        """Done with it (with ``multiple``, with every earlier unsettled one too)."""

    async def nack(self, requeue: bool = True) -> None:
        """Hand it back for redelivery (``requeue``) or dead-letter it."""

    async def reject(self, requeue: bool = False) -> None:
        """Dead-letter it (to the quarantine), or with ``requeue`` hand it back."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: persistent always."""

    body: bytes
    routing_key: str
    message_id: str | None = None
    type: str | None = None
    user_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str = "application/xml"
    timestamp: datetime | None = None


Handler = Callable[[Incoming], Awaitable[None]]


class Consumer(Protocol):
    """A running consumer; ``cancel`` stops new deliveries (held ones stay unsettled)."""

    async def cancel(self) -> None: ...


class Connection(Protocol):
    """One connection with one confirming channel."""

    async def declared(self, *exchanges: str) -> None:
        """Check that ``exchanges`` exist (a worker started before ``backbone init`` fails
        at once, not at its first publish)."""

    async def publish(self, exchange: str, message: Outgoing, *, mandatory: bool = False) -> bool:
        """Publish and wait for the confirm; False if a mandatory message was returned."""

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Consumer:
        """Call ``handler`` for each message of ``queue``, each in a task of its own, with
        at most ``prefetch`` unsettled at once."""

    def messages(
        self, queue: str, *, prefetch: int, timeout: float | None = None
    ) -> AsyncGenerator[Incoming, None]:
        """The messages of ``queue`` one by one, until ``timeout`` seconds pass without one;
        ``aclose()`` it to stop early (it cancels the consumer)."""


class Transport(Protocol):
    """Where connections come from: ``async with transport.connect() as connection``."""

    def connect(self) -> AbstractAsyncContextManager[Connection]: ...


__all__ = ["Connection", "Consumer", "Handler", "Incoming", "Outgoing", "Transport"]
