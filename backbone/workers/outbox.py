"""What workers publish: confirmed copies on edoc.deliver, events, and rejection statuses.

Shared by the validator and the tracker, so a rejection looks the same whoever refuses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, DeliveryMode
from aio_pika.exceptions import PublishError
from cryptography import x509

from .. import edxml, signing
from ..broker import topology
from ..config import Settings
from ..edxml.factory import new_status
from ..errors import Issue, truncate
from ..events import Event
from ..signing.pki import PrivateKey

Signer = tuple[PrivateKey, list[x509.Certificate]]
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(value: str | None, limit: int = 200) -> str | None:
    """A peer-chosen string made safe for XML, headers and logs: no control characters
    (NUL included), at most ``limit`` characters."""
    if value is None:
        return None
    return truncate(_UNPRINTABLE.sub("?", value), limit)


def derived_id(prefix: str, *parts: str | None) -> str:
    """A message id derived from peer strings, never built from them: a short string
    (AMQP allows 255 bytes) whatever they hold."""
    digest = hashlib.sha256("\x00".join(p or "" for p in parts).encode("utf-8", "replace"))
    return f"{prefix}:{digest.hexdigest()[:40]}"


class Outbox:
    """Publishing with confirms on one channel (opened with ``on_return_raises``)."""

    def __init__(self, settings: Settings, signer: Signer | None) -> None:
        self.settings = settings
        self.signer = signer
        self._exchanges: dict[str, AbstractExchange] = {}

    async def bind(self, channel: AbstractChannel) -> None:
        for name in (topology.DELIVER, topology.EVENTS):
            self._exchanges[name] = await channel.get_exchange(name, ensure=True)

    async def deliver(
        self,
        body: bytes,
        recipient: str,
        headers: Mapping[str, str | None],
        message_id: str,
        kind: str,
    ) -> bool:
        """One confirmed, mandatory publish to edoc.deliver; False if it was returned."""
        outgoing = aio_pika.Message(
            body,
            headers={k: v for k, v in headers.items() if v is not None},
            message_id=message_id,
            type=kind,
            content_type="application/xml",
            delivery_mode=DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
        )
        try:
            await self._exchanges[topology.DELIVER].publish(
                outgoing, routing_key=recipient, mandatory=True
            )
        except PublishError:  # returned: no inbox, and the alternate exchange failed too
            return False
        return True

    async def event(self, event: Event) -> None:
        await self._exchanges[topology.EVENTS].publish(
            aio_pika.Message(
                event.body(),
                message_id=event.event_id,
                content_type="application/json",
                delivery_mode=DeliveryMode.PERSISTENT,
                type=event.kind.value,
            ),
            routing_key=event.routing_key,
        )

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
