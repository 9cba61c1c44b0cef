"""Copies that matched no queue: whatever path took them to the alternate exchange
(no inbox bound, a queue deleted or a binding removed after check 7), each is recorded
``undeliverable`` for its recipient and the sender is told, with a status 02.

The copy is then dead-lettered to ``backbone.quarantine``, where an operator can replay
it once a queue serves the recipient. Statuses that found no inbox are dead-lettered too.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from ..agency import AgencyCode
from ..broker import topology
from ..config import Settings
from ..errors import Issue
from ..events import Event, Kind
from ..logs import get_logger
from .outbox import Outbox, derived_id, printable

log = get_logger("backbone.unroutable")
RECIPIENT = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To/OrganId"


class Unroutable:
    """Consumes ``backbone.unroutable`` until ``stop()``."""

    def __init__(self, settings: Settings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        connection: AbstractRobustConnection = await aio_pika.connect_robust(self.settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=32)
            await self.outbox.bind(channel)
            try:
                queue = await channel.get_queue(topology.UNROUTABLE, ensure=True)
                tag = await queue.consume(self._on_message)
            except AMQPError as exc:  # refused access, most likely: never stop the validator
                log.error(
                    "cannot consume the unroutable queue: copies that match no queue are "
                    "not reported undeliverable (give the workers' user read access to it)",
                    queue=topology.UNROUTABLE,
                    error=repr(exc)[:300],
                )
                return
            log.info("unroutable consuming", queue=topology.UNROUTABLE)
            if ready is not None:
                ready.set()
            await self._stopping.wait()
            await queue.cancel(tag)
        finally:
            if ready is not None:
                ready.set()
            await connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            await self.handle(message)
        except AMQPError as exc:  # not confirmed: the broker redelivers it
            log.warning("could not report an undeliverable copy; retried", error=repr(exc))
            with contextlib.suppress(AMQPError):  # a broken channel hands it back anyway
                await message.nack(requeue=True)
            return
        except Exception as exc:  # a bug or a hostile header: never hold the prefetch
            log.error(
                "could not report an undeliverable copy; quarantined",
                error=repr(exc)[:300],
                exc_info=True,
            )
        with contextlib.suppress(AMQPError):
            await message.reject(requeue=False)  # kept in backbone.quarantine for a replay

    async def handle(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        backbone_id = _text(headers.get("x-backbone-id"), 36)
        sender = _text(headers.get("x-sender"), 13) or ""
        document_id = _text(headers.get("x-edxml-document-id"), 255)
        recipient = printable(message.routing_key, 60) or ""
        bound = log.bind(backbone_id=backbone_id, document_id=document_id, agency=recipient)
        if message.type != "edoc" or backbone_id is None:
            bound.warning("a status found no queue; quarantined", kind=printable(message.type))
            return
        await self.outbox.event(
            Event(
                event_id=derived_id("undeliverable", backbone_id, recipient)[:64],
                kind=Kind.UNDELIVERABLE,
                backbone_id=backbone_id,
                sender=sender,
                document_id=document_id,
                recipient=recipient,
                description="no queue serves this recipient",
            )
        )
        if AgencyCode.is_valid(sender):
            issue = Issue.of(
                "undeliverable",
                RECIPIENT,
                "the document was accepted, but no inbox or gateway serves this recipient: "
                "its copy was not delivered",
                recipient,
            )
            await self.outbox.reject(
                sender, document_id or backbone_id, "delivery", issue, message.message_id
            )
        bound.warning("undeliverable copy; the sender is told")


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return printable(value, limit) if isinstance(value, str) and value else None
