"""What workers publish: copies on edoc.deliver, events, and rejection statuses, each
confirmed by the broker before the input that produced it is acked.

Shared by the validator, the tracker and the unroutable consumer, so that a rejection
looks the same whoever refuses. Events go out in batches (:class:`.grouped.Grouped`):
those that arrive while one batch is being confirmed go together in the next message, and
each caller returns once the message holding its events is confirmed (or raises its
failure).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from cryptography import x509

from .. import edxml, signing
from ..broker import topology
from ..broker.transport import Connection, Outgoing
from ..config import Settings
from ..edxml.factory import new_status
from ..errors import Issue
from ..events import BATCH, MAX_BATCH, Event, EventBatch, routing_key
from ..safe import derived_id, printable
from ..signing.pki import PrivateKey
from .grouped import Grouped

Signer = tuple[PrivateKey, list[x509.Certificate]]


class Publisher:
    """Confirmed publishes on one connection, as the backbone (``backbone_agency``)."""

    def __init__(self, connection: Connection, settings: Settings, signer: Signer | None) -> None:
        self.connection = connection
        self.settings = settings
        self.signer = signer
        self._events = Grouped(self._publish_events, MAX_BATCH)

    @property
    def batches(self) -> int:
        """Event messages published."""
        return self._events.groups

    async def ready(self) -> None:
        """The exchanges it publishes to exist."""
        await self.connection.declared(topology.DELIVER, topology.EVENTS)

    async def deliver(
        self,
        body: bytes,
        recipient: str,
        headers: Mapping[str, str | None],
        message_id: str,
        kind: str,
    ) -> bool:
        """One confirmed, mandatory publish to edoc.deliver; False if it was returned (no
        inbox, and the alternate exchange took nothing either)."""
        return await self.connection.publish(
            topology.DELIVER,
            Outgoing(
                body,
                recipient,
                message_id=message_id,
                type=kind,
                headers=headers,
                timestamp=datetime.now(UTC),
            ),
            mandatory=True,
        )

    async def event(self, *events: Event) -> None:
        """Publish ``events`` in the next batch; returns once it is confirmed."""
        await self._events(*events)

    async def _publish_events(self, events: list[Event]) -> list[None]:
        batch = EventBatch(events=events)
        await self.connection.publish(
            topology.EVENTS,
            Outgoing(
                batch.body(),
                routing_key(batch),
                message_id=events[0].event_id,
                type=BATCH,
                content_type="application/json",
            ),
        )
        return [None] * len(events)

    async def reject(
        self, to: str, document_id: str, check: str, issue: Issue, message_id: str | None
    ) -> None:
        """A status 02 from the backbone in ``to``'s inbox, naming the check and the fault."""
        description = printable(f"Rejected by the backbone at check {check}: {issue}", 3900)
        status = new_status(
            reporter=self.settings.backbone_agency,
            document=edxml.ResponseFor(organ_id=to, document_id=printable(document_id) or ""),
            status_code="02",
            description=description,
        )
        if self.signer is None:
            body = edxml.build(status, validate=False)
        else:
            body = signing.sign(status, *self.signer)
        headers = {
            "x-sender": self.settings.backbone_agency,
            "x-rejected-message-id": printable(message_id) or "",
            "x-rejection-check": check,
            "x-rejection-code": issue.code,
            "x-rejection-path": printable(issue.path, 500) or "",
            "x-rejection-value": printable(issue.value, 500) or "",
        }
        await self.deliver(body, to, headers, derived_id("rejection", message_id), "status")


def load_signer(settings: Settings) -> Signer | None:
    """The backbone's own key and chain, if configured."""
    if settings.backbone_key is None or settings.backbone_cert is None:
        return None
    return (
        signing.load_private_key(str(settings.backbone_key)),
        signing.load_certificates(str(settings.backbone_cert)),
    )
