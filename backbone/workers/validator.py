"""The validator: every submission is checked, then routed to its recipients or rejected.

Checks, in the order of DESIGN.md (recipients before the acceptance record, so that a
package refused for an unknown recipient does not use up its DocumentId):

1. size within the limit; ``user_id`` present and a known principal
2. safe parse                         3. structure and semantic rules
4. the sender is an agency the principal may act for (and is the routing key)
5. signature: valid, trusted, not revoked, bound to the sender (statuses: if configured)
7. every recipient registered and active
6. not a duplicate of an accepted DocumentId (a redelivery of the same submission is fine)

Outcomes: routed (one confirmed publish per recipient to edoc.deliver, events
``accepted`` and ``routed``), or rejected (event ``rejected`` and a status package 02 in the
sender's inbox naming the check, element and value). The input is acked only once all it
produced is confirmed; transient failures are retried, and past the delivery limit the
broker moves the message to ``backbone.quarantine``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError
from lxml import etree
from sqlalchemy.exc import SQLAlchemyError

from .. import edxml, signing
from ..agency import AgencyCode
from ..broker import topology
from ..config import Settings
from ..edxml.rules import TIMESTAMP_FORMAT
from ..errors import ErrorCode, InvalidPackage, Issue, PackageError, SignatureError
from ..events import Event, Kind
from ..logs import get_logger
from ..registry import Registry
from ..store import Store
from ..store import repository as repo
from .acceptances import Acceptances
from .outbox import Outbox, Signer, load_signer, printable
from .unroutable import Unroutable

log = get_logger("backbone.validator")
TRANSIENT = (SQLAlchemyError, AMQPError, ConnectionError, OSError, asyncio.TimeoutError)
TRANSIENT_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between in-place retries
MESSAGE_HEADER = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
# messages in flight per process: enough for the acceptances to be committed in groups
# (the benchmark: 32 -> 128 gave 15% more documents a second with two validators)
PREFETCH = 128
STOP_TIMEOUT = 30.0  # seconds a stopping validator gives the messages it holds
CANCEL_TIMEOUT = 5.0  # then seconds for the cancelled ones to let go of their connections


class Check(StrEnum):
    SIZE = "1-size"
    PRINCIPAL = "1-principal"
    PARSE = "2-parse"
    STRUCTURE = "3-structure"
    SENDER = "4-sender"
    SIGNATURE = "5-signature"
    DUPLICATE = "6-duplicate"
    RECIPIENTS = "7-recipients"


class Rejection(Exception):
    """A check failed: the submission is refused, never routed."""

    def __init__(self, check: Check, issue: Issue, package: edxml.Package | None = None) -> None:
        super().__init__(f"{check}: {issue}")
        self.check = check
        self.issue = issue
        self.package = package


@dataclass(frozen=True, slots=True)
class Accepted:
    package: edxml.Package
    verified: signing.Verified | None
    backbone_id: str | None  # documents only


def _issue(code: str, path: str, message: str, value: str | None = None) -> Issue:
    return Issue.of(code, path, message, value)


class Validator:
    """One validator; ``run()`` consumes until ``stop()``. Several may run side by side."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: Registry,
        verifier: signing.Verifier,
        signer: Signer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.verifier = verifier
        self.outbox = Outbox(settings, signer)
        self.acceptances = Acceptances(store)
        self.limits = settings.limits
        self.subject_binding = signing.SubjectBinding(settings.cert_agency_attribute)
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    # --- the consumer ---------------------------------------------------------------------

    async def run(self, prefetch: int = PREFETCH, ready: asyncio.Event | None = None) -> None:
        connection: AbstractRobustConnection = await aio_pika.connect_robust(self.settings.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=prefetch)
            await self.outbox.bind(channel)
            queue = await channel.get_queue(topology.VALIDATE, ensure=True)
            tag = await queue.consume(self._on_message)
            log.info("validator consuming", queue=topology.VALIDATE, prefetch=prefetch)
            if ready is not None:
                ready.set()
            await self._stopping.wait()
            await queue.cancel(tag)
            await self._finish_in_flight()
        finally:
            await connection.close()
            log.info("validator stopped")

    def stop(self) -> None:
        self._stopping.set()

    async def _finish_in_flight(self) -> None:
        """Finish what was started; past STOP_TIMEOUT, cancel the rest (unacked, so the
        broker redelivers it) and wait CANCEL_TIMEOUT for them to let go of their database
        connections: one still checked out when the store closes keeps its thread, and the
        process, alive. The warning says where each was waiting."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(self._in_flight, timeout=STOP_TIMEOUT)
        if pending:
            log.warning(
                "stopping: messages not finished are handed back",
                count=len(pending),
                waiting_in=sorted({_awaiting(task) for task in pending})[:5],
            )
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=CANCEL_TIMEOUT)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one submission; ack after its outputs are confirmed.

        A transient failure (database, broker) is retried here with a growing pause before
        the message is handed back, so a short outage does not use up its delivery limit;
        an unexpected error is handed back at once, and past the limit it is quarantined.
        """
        bound = log.bind(
            message_id=printable(message.message_id), agency=printable(message.routing_key, 20)
        )
        for attempt, pause in enumerate((*TRANSIENT_PAUSES, None), start=1):
            try:
                await self._process(message, bound)
            except TRANSIENT as exc:
                if pause is None:  # stopping too: what it holds it finishes (or STOP_TIMEOUT)
                    bound.warning("transient failure; handed back for redelivery", error=repr(exc))
                    await _settle(message, requeue=True)
                    return
                bound.warning("transient failure; retrying", error=repr(exc), attempt=attempt)
                await asyncio.sleep(pause)
            except Exception as exc:  # a bug: retried up to the delivery limit, then quarantined
                bound.error(
                    "unexpected failure; redelivered, then quarantined",
                    error=repr(exc),
                    exc_info=True,
                )
                await _settle(message, requeue=True)
                return
            else:
                await _settle(message)
                return

    async def _process(self, message: AbstractIncomingMessage, bound: Any) -> None:
        try:
            accepted = await self.check(message)
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

    # --- the checks -----------------------------------------------------------------------

    def _size(self, size: int, status: bool) -> None:
        """Check 1: statuses have a small limit of their own (they travel in events)."""
        limit = self.settings.max_status_bytes if status else self.limits.max_package_bytes
        if size > limit:
            what = "status" if status else "package"
            raise Rejection(
                Check.SIZE,
                _issue(
                    ErrorCode.TOO_LARGE,
                    "",
                    f"the {what} is {size} bytes, over the limit of {limit}",
                ),
            )

    async def check(self, message: AbstractIncomingMessage) -> Accepted:
        body = message.body
        self._size(len(body), message.type == "status")
        user = message.user_id
        if not user:
            raise Rejection(
                Check.PRINCIPAL,
                _issue(
                    "missing-user-id",
                    "",
                    "the message has no user_id property naming the sending principal",
                ),
            )
        if not await self.registry.may_act_for(user, message.routing_key or ""):
            # before any parse: an unknown or inactive principal costs one cached lookup
            raise Rejection(
                Check.PRINCIPAL,
                _issue(
                    "principal-not-allowed",
                    "",
                    f"principal {printable(user, 64)!r} is not a registered, active principal "
                    "that may send as this routing key",
                    printable(message.routing_key, 64),
                ),
            )
        try:  # CPU-heavy: in a thread, so the loop keeps serving the other messages
            tree, package = await asyncio.to_thread(edxml.load_tree, body, self.limits)
        except InvalidPackage as exc:
            raise Rejection(Check.STRUCTURE, exc.issues[0]) from None
        except PackageError as exc:
            raise Rejection(Check.PARSE, exc.issues[0]) from None
        if isinstance(package, edxml.StatusPackage):
            self._size(len(body), True)  # a status published as another type
        elif len(package.recipients) > self.settings.max_recipients:
            raise Rejection(
                Check.RECIPIENTS,
                _issue(
                    "too-many-recipients",
                    f"{MESSAGE_HEADER}/To",
                    f"the package names {len(package.recipients)} recipients, over the "
                    f"limit of {self.settings.max_recipients}",
                ),
                package,
            )
        sender = package.sender or ""
        if sender != message.routing_key:
            raise Rejection(
                Check.SENDER,
                _issue(
                    "sender-mismatch",
                    f"{MESSAGE_HEADER}/From/OrganId",
                    f"the package was published with routing key "
                    f"{message.routing_key!r}, not its sender",
                    sender,
                ),
                package,
            )
        if not await self.registry.may_act_for(user, sender):
            raise Rejection(
                Check.SENDER,
                _issue(
                    "sender-not-allowed",
                    f"{MESSAGE_HEADER}/From/OrganId",
                    f"principal {user!r} may not act for this agency "
                    "(or it is not registered and active)",
                    sender,
                ),
                package,
            )
        verified = await self._verify(body, tree, package)
        if verified is not None:
            package = verified.package  # from here on, only what the signature covers
        if isinstance(package, edxml.StatusPackage):
            return Accepted(package, verified, None)
        for index, recipient in enumerate(package.recipients):
            if not await self.registry.is_active(recipient or ""):
                position = f"[{index + 1}]" if len(package.recipients) > 1 else ""
                raise Rejection(
                    Check.RECIPIENTS,
                    _issue(
                        "unknown-recipient",
                        f"{MESSAGE_HEADER}/To{position}/OrganId",
                        "the recipient is not a registered, active agency",
                        recipient,
                    ),
                    package,
                )
        record = await self.acceptances.record(
            repo.Submission(
                sender,
                package.document_id,
                hashlib.sha256(body).hexdigest(),
                len(body),
                repo.document_facts(package),
            )
        )
        if record.outcome is repo.Acceptance.DUPLICATE:
            raise Rejection(
                Check.DUPLICATE,
                _issue(
                    "duplicate",
                    f"{MESSAGE_HEADER}/DocumentId",
                    "this sender already had another package accepted "
                    f"under this DocumentId (backbone id {record.backbone_id})",
                    package.document_id,
                ),
                package,
            )
        return Accepted(package, verified, record.backbone_id)

    async def _verify(
        self, body: bytes, tree: etree._Element, package: edxml.Package
    ) -> signing.Verified | None:
        try:
            verified = await asyncio.to_thread(self.verifier.verify, body, parsed=(tree, package))
        except SignatureError as exc:
            unsigned_status = (
                exc.code == ErrorCode.UNSIGNED
                and isinstance(package, edxml.StatusPackage)
                and self.settings.status_signature == "optional"
            )
            if unsigned_status:
                return None
            raise Rejection(Check.SIGNATURE, exc.issues[0], package) from None
        except PackageError as exc:  # cannot happen after load(); kept for safety
            raise Rejection(Check.PARSE, exc.issues[0], package) from None
        sender = verified.package.sender or ""
        mode = self.settings.cert_binding
        bound = (
            mode in ("registry", "either")
            and await self.registry.is_bound(verified.fingerprint, sender)
        ) or (
            mode in ("subject", "either")
            and self.subject_binding.binds(verified.certificate, verified.fingerprint, sender)
        )
        if not bound:
            raise Rejection(Check.SIGNATURE, signing.wrong_agency(verified).issues[0], package)
        return verified

    # --- outcomes -------------------------------------------------------------------------

    async def route(self, message: AbstractIncomingMessage, accepted: Accepted) -> None:
        package = accepted.package
        now = datetime.now(UTC)
        if isinstance(package, edxml.StatusPackage):
            await self._route_status(message, package)
            return
        assert isinstance(package, edxml.DocumentPackage) and accepted.backbone_id is not None
        headers = {
            "x-backbone-id": accepted.backbone_id,
            "x-sender": package.sender,
            "x-edxml-document-id": package.document_id,
            "x-accepted-at": now.isoformat(),
        }
        if accepted.verified is not None:
            headers["x-signer"] = accepted.verified.fingerprint
        common = {
            "backbone_id": accepted.backbone_id,
            "sender": package.sender,
            "document_id": package.document_id,
            "message_id": printable(message.message_id),
        }
        recipients = list(dict.fromkeys(r or "" for r in package.recipients))
        # all in flight at once: the confirms come back together, in publish order
        _, *delivered = await asyncio.gather(
            self.outbox.event(Event(kind=Kind.ACCEPTED, **common)),
            *(
                self.outbox.deliver(
                    message.body, recipient, headers, f"{accepted.backbone_id}:{recipient}", "edoc"
                )
                for recipient in recipients
            ),
        )
        await asyncio.gather(
            *(
                self.outbox.event(
                    Event(
                        kind=Kind.ROUTED if ok else Kind.UNDELIVERABLE,
                        recipient=recipient,
                        **common,
                    )
                )
                for recipient, ok in zip(recipients, delivered, strict=True)
            )
        )

    async def _route_status(
        self, message: AbstractIncomingMessage, package: edxml.StatusPackage
    ) -> None:
        """Hand the status to the tracker, which checks who reported it and forwards it."""
        header = package.header
        await self.outbox.event(
            Event(
                kind=Kind.STATUS,
                sender=header.response_for.organ_id,
                recipient=package.sender,
                document_id=header.response_for.document_id,
                status_code=header.status_code,
                description=header.description,
                message_id=printable(message.message_id),
                staff=header.staff_info.staff if header.staff_info else None,
                occurred_at=_timestamp(header.timestamp),
                package=base64.b64encode(message.body).decode("ascii"),
            )
        )

    async def reject(self, message: AbstractIncomingMessage, rejection: Rejection) -> None:
        """Event for the tracker, and a status 02 in the sender's inbox naming the fault."""
        issue = rejection.issue
        package = rejection.package
        sender = message.routing_key or ""
        document_id = _document_id(package)
        await self.outbox.event(
            Event(
                kind=Kind.REJECTED,
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
        await self.outbox.reject(
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


async def _settle(message: AbstractIncomingMessage, requeue: bool | None = None) -> None:
    """Ack (or nack for a retry); a lost channel means the broker redelivers anyway."""
    try:
        if requeue is None:
            await message.ack()
        else:
            await message.nack(requeue=requeue)
    except AMQPError as exc:
        log.warning("could not settle the message; the broker will redeliver it", error=repr(exc))


# --- running it ------------------------------------------------------------------------------


def build(settings: Settings) -> tuple[Validator, Store]:
    """A validator wired from settings (trust bundle required)."""
    if settings.trust_bundle is None:
        raise SystemExit(
            "the validator needs BACKBONE_TRUST_BUNDLE (the CA bundle signatures chain to)"
        )
    trust = signing.TrustStore.from_files(
        settings.trust_bundle, settings.crl_files, refresh_seconds=settings.crl_refresh_seconds
    )
    verifier = signing.Verifier(trust, None, allow_sha1=settings.allow_sha1, limits=settings.limits)
    signer = load_signer(settings)
    store = Store(settings.database_url)
    registry = Registry(store, ttl=settings.registry_ttl)
    return Validator(settings, store, registry, verifier, signer), store


def _awaiting(task: asyncio.Task[None]) -> str:
    """Where a task waits: its chain of awaited coroutines (``handle:180>_process:204...``)."""
    where: list[str] = []
    coro: Any = task.get_coro()
    while getattr(coro, "cr_frame", None) is not None:
        where.append(f"{coro.cr_code.co_name}:{coro.cr_frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return ">".join(where)


async def serve(settings: Settings, prefetch: int, with_tracker: bool = False) -> None:
    """Run one validator (and the tracker) until SIGTERM or SIGINT, then finish in-flight
    messages."""
    from . import tracker as tracking

    validator, store = build(settings)
    unroutable = Unroutable(settings, Outbox(settings, validator.outbox.signer))
    runs = [validator.run(prefetch=prefetch), unroutable.run()]
    stops = [validator.stop, unroutable.stop]
    stores = [store]
    if with_tracker:
        tracker, tracker_store = tracking.build(settings)
        runs.append(tracker.run())
        stops.append(tracker.stop)
        stores.append(tracker_store)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: [stop() for stop in stops])
    try:
        await asyncio.gather(*runs)
    finally:
        for each in stores:
            await each.close()


def run_processes(
    settings: Settings, processes: int, prefetch: int, *, with_tracker: bool = False
) -> None:
    """``processes`` validators, each in its own process (one here, the rest spawned); the
    tracker, if asked, beside the validator of this process."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(settings.model_dump(), prefetch), daemon=True)
        for _ in range(processes - 1)
    ]
    for child in children:
        child.start()
    try:
        asyncio.run(serve(settings, prefetch, with_tracker))
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(timeout=35)


def _child(values: dict[str, object], prefetch: int) -> None:
    from ..logs import configure

    settings = Settings.model_validate(values)
    configure("json", settings.log_level)
    asyncio.run(serve(settings, prefetch))


__all__ = ["Check", "Rejection", "Validator", "build", "run_processes", "serve"]
