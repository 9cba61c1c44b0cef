"""The validator: every submission is checked (:mod:`.checks`), then routed to its
recipients or rejected.

Outcomes: routed (one confirmed publish per recipient to edoc.deliver, then one event
``accepted`` naming the copies routed and undeliverable), or rejected (event ``rejected``
and a status package 02 in the sender's inbox naming the check, element and value). The
input is acked only once all it produced is confirmed; transient failures are retried in
place, and past the delivery limit the broker moves the message to ``backbone.quarantine``.
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

from .. import edxml, signing
from ..agency import AgencyCode
from ..broker import topology
from ..broker.transport import Incoming, Transport
from ..config import Settings
from ..edxml.rules import TIMESTAMP_FORMAT
from ..errors import TrustConfigError
from ..events import AcceptedEvent, RejectedEvent, StatusEvent
from ..registry import Registry
from ..safe import printable
from ..store import Store
from .acceptances import Acceptances
from .checks import Accepted, Check, Checks, Rejection, Submission
from .publisher import Signer, load_signer
from .worker import TRANSIENT, Worker

TRANSIENT_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between in-place retries
# messages in flight per process: enough for the acceptances to be committed in groups
# (the benchmark: 32 -> 128 gave 15% more documents a second with two validators)
PREFETCH = 128


class Validator(Worker):
    """One validator consuming ``backbone.validate``; several may run side by side."""

    queue = topology.VALIDATE
    name = "validator"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        verifier: signing.Verifier,
        signer: Signer | None = None,
        *,
        transport: Transport | None = None,
        prefetch: int = PREFETCH,
    ) -> None:
        super().__init__(settings, signer, transport=transport, prefetch=prefetch, stores=[store])
        self.store = store
        self.registry = registry
        self.checks = Checks(settings, registry, verifier, Acceptances(store))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: Transport | None = None, prefetch: int = PREFETCH
    ) -> Validator:
        """A validator wired from settings (trust bundle required); it owns its store."""
        if settings.trust_bundle is None:
            raise TrustConfigError(
                "the validator needs BACKBONE_TRUST_BUNDLE (the CA bundle signatures chain to)"
            )
        trust = signing.TrustStore.from_files(
            settings.trust_bundle, settings.crl_files, refresh_seconds=settings.crl_refresh_seconds
        )
        verifier = signing.Verifier(
            trust, None, allow_sha1=settings.allow_sha1, limits=settings.limits
        )
        store = Store(settings.database_url)
        registry = Registry(store, ttl=settings.registry_ttl)
        return cls(
            settings,
            store,
            registry,
            verifier,
            load_signer(settings),
            transport=transport,
            prefetch=prefetch,
        )

    async def handle(self, message: Incoming) -> None:
        """Process one submission; ack after its outputs are confirmed.

        A transient failure (database, broker) is retried here with a growing pause before
        the message is handed back, so a short outage does not use up its delivery limit;
        an unexpected error is handed back at once, and past the limit it is quarantined.
        """
        bound = self.log.bind(
            message_id=printable(message.message_id), agency=printable(message.routing_key, 20)
        )
        for attempt, pause in enumerate((*TRANSIENT_PAUSES, None), start=1):
            try:
                await self._process(message, bound)
            except TRANSIENT as exc:
                if pause is None:  # stopping too: what it holds it finishes (or STOP_TIMEOUT)
                    bound.warning("transient failure; handed back for redelivery", error=repr(exc))
                    await self.settle(message, requeue=True)
                    return
                bound.warning("transient failure; retrying", error=repr(exc), attempt=attempt)
                await asyncio.sleep(pause)
            except Exception as exc:  # a bug: retried up to the delivery limit, then quarantined
                bound.error(
                    "unexpected failure; redelivered, then quarantined",
                    error=repr(exc),
                    exc_info=True,
                )
                await self.settle(message, requeue=True)
                return
            else:
                await self.settle(message)
                return

    async def _process(self, message: Incoming, bound: Any) -> None:
        try:
            accepted = await self.checks(Submission.of(message))
        except Rejection as rejection:
            await self.reject(message, rejection)
            bound.info(
                "rejected",
                check=rejection.check.value,
                code=rejection.issue.code,
                path=rejection.issue.path,
                document_id=_document_id(rejection.package),
            )
        else:
            await self.route(message, accepted)
            bound.info(
                "accepted",
                document_id=accepted.package.document_id,
                backbone_id=accepted.backbone_id,
                kind=accepted.package.kind,
            )

    async def route(self, message: Incoming, accepted: Accepted) -> None:
        package = accepted.package
        if isinstance(package, edxml.StatusPackage):
            await self._route_status(message, package)
            return
        assert isinstance(package, edxml.DocumentPackage) and accepted.backbone_id is not None
        headers = {
            "x-backbone-id": accepted.backbone_id,
            "x-sender": package.sender,
            "x-edxml-document-id": package.document_id,
            "x-accepted-at": datetime.now(UTC).isoformat(),
        }
        if accepted.verified is not None:
            headers["x-signer"] = accepted.verified.fingerprint
        backbone_id, sender = accepted.backbone_id, package.sender or ""
        message_id = printable(message.message_id)
        recipients = list(dict.fromkeys(r or "" for r in package.recipients))
        # all in flight at once: the confirms come back together, in publish order
        delivered = await asyncio.gather(
            *(
                self.publisher.deliver(
                    message.body, recipient, headers, f"{accepted.backbone_id}:{recipient}", "edoc"
                )
                for recipient in recipients
            )
        )
        outcomes = list(zip(recipients, delivered, strict=True))
        await self.publisher.event(
            AcceptedEvent(
                backbone_id=backbone_id,
                sender=sender,
                document_id=package.document_id,
                message_id=message_id,
                routed=tuple(r for r, ok in outcomes if ok),
                undeliverable=tuple(r for r, ok in outcomes if not ok),
            )
        )

    async def _route_status(self, message: Incoming, package: edxml.StatusPackage) -> None:
        """Hand the status to the tracker, which checks who reported it and forwards it."""
        header = package.header
        await self.publisher.event(
            StatusEvent(
                addressee=header.response_for.organ_id,
                reporter=package.sender or "",
                document_id=header.response_for.document_id,
                status_code=header.status_code,
                description=header.description,
                message_id=printable(message.message_id),
                staff=header.staff_info.staff if header.staff_info else None,
                occurred_at=_timestamp(header.timestamp),
                package=base64.b64encode(message.body).decode("ascii"),
            )
        )

    async def reject(self, message: Incoming, rejection: Rejection) -> None:
        """Event for the tracker, and a status 02 in the sender's inbox naming the fault."""
        issue = rejection.issue
        sender = message.routing_key or ""
        document_id = _document_id(rejection.package)
        await self.publisher.event(
            RejectedEvent(
                sender=sender,
                document_id=document_id,
                check=rejection.check.value,
                code=issue.code,
                path=issue.path,
                value=issue.value,
                description=issue.message,
                message_id=printable(message.message_id),
            )
        )
        if not AgencyCode.is_valid(sender):
            return  # no inbox to tell: the event is the record
        await self.publisher.reject(
            sender,
            document_id or f"message:{printable(message.message_id)}",
            rejection.check.value,
            issue,
            message.message_id,
        )


def _document_id(package: edxml.Package | None) -> str | None:
    return package.document_id if package is not None else None


def _timestamp(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


__all__ = ["PREFETCH", "Check", "Rejection", "Validator"]
