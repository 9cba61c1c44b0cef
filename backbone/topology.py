"""Every exchange, queue, binding and argument of the AMQP contract (schemas/asyncapi.yaml).

Declaring is idempotent: ``backbone init`` runs it on every start, ``agency add`` and
``gateway add`` declare the inbox of what they add.
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, ExchangeType
from aiormq.abc import FieldTable

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


async def declare(channel: AbstractChannel, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
    """Declare the whole backbone topology (not the agencies' inboxes)."""
    dlx = await channel.declare_exchange(DLX, ExchangeType.FANOUT, durable=True)
    quarantine = await channel.declare_queue(
        QUARANTINE, durable=True, arguments=quorum(delivery_limit, dead_letter=False)
    )
    await quarantine.bind(dlx)

    unroutable_exchange = await channel.declare_exchange(
        UNROUTABLE_EXCHANGE, ExchangeType.FANOUT, durable=True
    )
    unroutable = await channel.declare_queue(
        UNROUTABLE, durable=True, arguments=quorum(delivery_limit)
    )
    await unroutable.bind(unroutable_exchange)

    submit = await channel.declare_exchange(SUBMIT, ExchangeType.TOPIC, durable=True)
    validate = await channel.declare_queue(VALIDATE, durable=True, arguments=quorum(delivery_limit))
    await validate.bind(submit, routing_key="#")

    await channel.declare_exchange(
        DELIVER,
        ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": UNROUTABLE_EXCHANGE},
    )

    events = await channel.declare_exchange(EVENTS, ExchangeType.TOPIC, durable=True)
    tracker = await channel.declare_queue(TRACKER, durable=True, arguments=quorum(delivery_limit))
    await tracker.bind(events, routing_key="event.#")


async def declare_inbox(
    channel: AbstractChannel, code: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> None:
    """An agency's inbox, bound to edoc.deliver with its identifier."""
    queue = await channel.declare_queue(inbox(code), durable=True, arguments=quorum(delivery_limit))
    await queue.bind(DELIVER, routing_key=code)


async def declare_gateway(
    channel: AbstractChannel,
    name: str,
    patterns: Iterable[str],
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> None:
    """A gateway's inbox, bound with each pattern it serves (``*.*.*.H41``)."""
    queue = await channel.declare_queue(
        gateway_queue(name), durable=True, arguments=quorum(delivery_limit)
    )
    for pattern in patterns:
        await queue.bind(DELIVER, routing_key=pattern)


async def declare_all(url: str, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
    """Connect to ``url`` and declare the topology."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await declare(channel, delivery_limit)
    finally:
        await connection.close()
