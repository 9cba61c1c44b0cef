"""Every exchange, queue, binding and argument of the AMQP contract (schemas/asyncapi.yaml).

Declaring is idempotent: ``backbone init`` runs it on every start. Which queue receives
an agency's deliveries is decided by ``serving_queue`` (one queue per agency) and kept on
the broker by ``route_changes`` and ``apply_routes``, which every registry command runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType
from aiormq.abc import FieldTable

from ..agency import topic_matches

SUBMIT = "edoc.submit"  # topic: gateways publish packages, routing key = sending agency
DELIVER = "edoc.deliver"  # topic: validators publish per recipient, routing key = recipient
UNROUTABLE_EXCHANGE = "edoc.unroutable"  # alternate exchange of edoc.deliver
EVENTS = "backbone.events"  # topic: lifecycle events (JSON), routing key event.<kind>
DLX = "backbone.dlx"  # where messages past their delivery limit go

VALIDATE = "backbone.validate"
TRACKER = "backbone.tracker"
QUARANTINE = "backbone.quarantine"
UNROUTABLE = "backbone.unroutable"

DEFAULT_DELIVERY_LIMIT = 5


def inbox(code: str) -> str:
    """The inbox queue of an agency."""
    return f"inbox.{code}"


def gateway_queue(name: str) -> str:
    """The inbox queue of a provincial gateway."""
    return f"gateway.{name}"


def quorum(delivery_limit: int = DEFAULT_DELIVERY_LIMIT, dead_letter: bool = True) -> FieldTable:
    """Arguments of a queue that holds documents: replicated, bounded redelivery, and
    at-least-once dead-lettering into the quarantine."""
    arguments: FieldTable = {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    if dead_letter:
        arguments.update(
            {
                "x-dead-letter-exchange": DLX,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )
    return arguments


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: ExchangeType
    arguments: FieldTable = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    arguments: FieldTable
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key; fanout: the name)


def backbone(delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> tuple[list[Exchange], list[Queue]]:
    """The whole backbone topology (not the agencies' inboxes) as data: declared on
    RabbitMQ by ``declare``, and the same in memory by :mod:`backbone.testing`."""
    exchanges = [
        Exchange(DLX, ExchangeType.FANOUT),
        Exchange(UNROUTABLE_EXCHANGE, ExchangeType.FANOUT),
        Exchange(SUBMIT, ExchangeType.TOPIC),
        Exchange(DELIVER, ExchangeType.TOPIC, {"alternate-exchange": UNROUTABLE_EXCHANGE}),
        Exchange(EVENTS, ExchangeType.TOPIC),
    ]
    queues = [
        Queue(QUARANTINE, quorum(delivery_limit, dead_letter=False), ((DLX, QUARANTINE),)),
        Queue(UNROUTABLE, quorum(delivery_limit), ((UNROUTABLE_EXCHANGE, UNROUTABLE),)),
        Queue(VALIDATE, quorum(delivery_limit), ((SUBMIT, "#"),)),
        Queue(TRACKER, quorum(delivery_limit), ((EVENTS, "event.#"),)),
    ]
    return exchanges, queues


async def declare(channel: AbstractChannel, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
    """Declare the whole backbone topology (not the agencies' inboxes)."""
    exchanges, queues = backbone(delivery_limit)
    for exchange in exchanges:
        await channel.declare_exchange(
            exchange.name, exchange.type, durable=True, arguments=exchange.arguments or None
        )
    for queue in queues:
        declared = await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
        for source, key in queue.bindings:
            await declared.bind(source, routing_key=key)


async def declare_inbox(
    channel: AbstractChannel, code: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> None:
    """An agency's inbox, bound to edoc.deliver with its identifier."""
    queue = await channel.declare_queue(inbox(code), durable=True, arguments=quorum(delivery_limit))
    await queue.bind(DELIVER, routing_key=code)


async def declare_gateway(
    channel: AbstractChannel,
    name: str,
    keys: Iterable[str],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> None:
    """A gateway's inbox, bound with each of ``keys``: the identifiers of the agencies it
    serves (``serving_queue``). A pattern as a key (``*.*.*.H41``) would also take the
    documents of agencies that have inboxes of their own: each would arrive twice."""
    queue = await channel.declare_queue(
        gateway_queue(name), durable=True, arguments=quorum(delivery_limit)
    )
    for key in keys:
        await queue.bind(DELIVER, routing_key=key)


# --- who receives an agency's deliveries ----------------------------------------------------


def _specificity(pattern: str) -> tuple[int, int]:
    """More literal words first, then fewer ``#``: ``*.*.15.H41`` before ``*.*.*.H41``."""
    words = pattern.split(".")
    return (sum(w not in ("*", "#") for w in words), -words.count("#"))


def serving_queue(
    code: str, own_principal: bool, gateways: Sequence[tuple[str, Sequence[str]]]
) -> str:
    """The one queue that receives what is delivered to agency ``code``.

    A topic exchange cannot exclude, so each agency is bound to exactly one queue with its
    identifier, chosen here:

    1. ``own_principal`` (an active broker user that acts for this agency alone): its
       inbox. It connects by itself; a gateway serving its province may still read that
       inbox (its grant allows it), but receives no copy of its own.
    2. Otherwise the active gateway (``gateways``: name and patterns of each active one)
       whose pattern covers it: the most specific pattern wins (more literal words, then
       fewer ``#``), then the first gateway name in order, so that overlapping gateways
       still give one queue.
    3. Otherwise (an imported agency with no broker user and no gateway) its own inbox,
       where documents wait until it gets a user (``backbone agency add CODE --name
       NAME``) or a gateway serves it (what waits there stays readable by that gateway).
    """
    if own_principal:
        return inbox(code)
    covering = [
        (_specificity(pattern), name)
        for name, patterns in gateways
        for pattern in patterns
        if topic_matches(pattern, code)
    ]
    if not covering:
        return inbox(code)
    best = max(spec for spec, _ in covering)
    return gateway_queue(min(name for spec, name in covering if spec == best))


Binding = tuple[str, str]  # (queue, routing key) on edoc.deliver


def route_changes(
    wanted: Mapping[str, str], current: Iterable[Binding]
) -> tuple[set[Binding], set[Binding]]:
    """(to bind, to unbind) so that ``current`` (the bindings of edoc.deliver to inboxes
    and gateway queues) becomes exactly one binding per agency of ``wanted`` (identifier
    -> its serving queue). Anything else there is stale: a pattern binding of an older
    version, an agency now served elsewhere, an agency no longer registered."""
    target = {(queue, code) for code, queue in wanted.items()}
    have = {b for b in current if is_delivery_queue(b[0])}
    return target - have, have - target


def is_delivery_queue(name: str) -> bool:
    """An inbox or a gateway queue: what the registry's bindings point at."""
    return name.startswith(("inbox.", "gateway."))


async def apply_routes(
    channel: AbstractChannel,
    bind: Iterable[Binding],
    unbind: Iterable[Binding],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    done: Callable[[], None] = lambda: None,
) -> None:
    """Bind first, then unbind: a document routed meanwhile may arrive in both queues
    (same ``x-backbone-id``), never in none. ``done`` is called after each binding
    (declaring a new quorum inbox costs the broker about 8 ms: thousands take minutes)."""
    queues: dict[str, AbstractQueue] = {}
    for name, key in sorted(bind):
        if name not in queues:
            queues[name] = await channel.declare_queue(
                name, durable=True, arguments=quorum(delivery_limit)
            )
        await queues[name].bind(DELIVER, routing_key=key)
        done()
    for name, key in sorted(unbind):
        queue = await channel.get_queue(name, ensure=False)
        await queue.unbind(DELIVER, routing_key=key)
        done()


async def declare_topology(url: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
    """Connect to ``url`` and declare the backbone's topology (``declare``; no inboxes)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await declare(channel, delivery_limit)
    finally:
        await connection.close()
