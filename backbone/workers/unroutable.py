"""Copies that matched no queue: whatever path took them to the alternate exchange
(no inbox bound, a queue deleted or a binding removed after check 7), each is recorded
``undeliverable`` for its recipient and the sender is told, with a status 02.

The copy is then dead-lettered to ``backbone.quarantine``, where an operator can replay
it once a queue serves the recipient. Statuses that found no inbox are dead-lettered too.
"""

from __future__ import annotations

from ..agency import AgencyCode
from ..broker import topology
from ..broker.transport import Incoming, Transport
from ..config import Settings
from ..edxml.paths import RECIPIENT
from ..errors import BrokerError, ErrorCode, Issue
from ..events import UndeliverableEvent
from ..safe import derived_id, printable
from .publisher import Signer
from .worker import Worker

PREFETCH = 32


class Unroutable(Worker):
    """Consumes ``backbone.unroutable``; one that may not read it logs that and does nothing
    (it never stops the validator beside it)."""

    queue = topology.UNROUTABLE
    name = "unroutable"
    required = False

    def __init__(
        self, settings: Settings, signer: Signer | None, *, transport: Transport | None = None
    ) -> None:
        super().__init__(settings, signer, transport=transport, prefetch=PREFETCH)

    async def handle(self, message: Incoming) -> None:
        """Report it, then dead-letter it into the quarantine (kept for a replay)."""
        try:
            await self.report(message)
        except BrokerError as exc:  # not confirmed: the broker redelivers it
            self.log.warning("could not report an undeliverable copy; retried", error=str(exc))
            await self.settle(message, requeue=True)
            return
        except Exception as exc:  # a bug or a hostile header: never hold the prefetch
            self.log.error(
                "could not report an undeliverable copy; quarantined",
                error=repr(exc)[:300],
                exc_info=True,
            )
        await self.quarantine(message)

    async def report(self, message: Incoming) -> None:
        headers = message.headers or {}
        backbone_id = _text(headers.get("x-backbone-id"), 36)
        sender = _text(headers.get("x-sender"), 13) or ""
        document_id = _text(headers.get("x-edxml-document-id"), 255)
        recipient = printable(message.routing_key, 60) or ""
        bound = self.log.bind(backbone_id=backbone_id, document_id=document_id, agency=recipient)
        if message.type != "edoc" or backbone_id is None:
            bound.warning("a status found no queue; quarantined", kind=printable(message.type))
            return
        await self.publisher.event(
            UndeliverableEvent(
                event_id=derived_id("undeliverable", backbone_id, recipient)[:64],
                backbone_id=backbone_id,
                sender=sender,
                document_id=document_id,
                recipient=recipient,
                description="no queue serves this recipient",
            )
        )
        if AgencyCode.is_valid(sender):
            issue = Issue.of(
                ErrorCode.UNDELIVERABLE,
                RECIPIENT,
                "the document was accepted, but no inbox or gateway serves this recipient: "
                "its copy was not delivered",
                recipient,
            )
            await self.publisher.reject(
                sender, document_id or backbone_id, "delivery", issue, message.message_id
            )
        bound.warning("undeliverable copy; the sender is told")


def _text(value: object, limit: int) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return printable(value, limit) if isinstance(value, str) and value else None
