"""One world for the workers' test bodies, two ways to build it: on the in-memory broker
(``tests/unit``, fast and deterministic) and on a real RabbitMQ (``tests/pipeline``), as
FastStream's ``TestRabbitBroker(with_real=...)`` runs one test body both ways.

A body speaks only this interface. Waiting differs: in memory ``settle()`` is the broker's
``join()`` (everything consumed, every handler finished: nothing more will happen); on
RabbitMQ the world waits for something positive (a message that must arrive, a row that
must be recorded) and only then looks at what must not be there.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from backbone import edxml
from backbone.client import AsyncGateway
from backbone.config import Settings
from backbone.edxml.factory import new_status
from backbone.registry import Registry
from backbone.store import Store
from backbone.store.models import Delivery, Document, EventRecord
from backbone.workers.tracker import Tracker
from backbone.workers.validator import Validator

from .conftest import SENDER, Signer, make_document


@dataclass(frozen=True)
class Received:
    """A message found in a queue."""

    body: bytes
    headers: Mapping[str, Any]
    routing_key: str
    type: str | None

    @property
    def package(self) -> edxml.Package:
        return edxml.parse(self.body)

    @property
    def status_code(self) -> str | None:
        package = self.package
        return package.header.status_code if isinstance(package, edxml.StatusPackage) else None


def document(**fields: object) -> edxml.DocumentPackage:
    """A document with a DocumentId of its own."""
    fields.setdefault("document_id", f"{SENDER},2026/11/23,{uuid.uuid4().hex[:8]}/VPCP")
    return make_document(**fields)


class World(ABC):
    """Registry, workers and broker of one test."""

    settings: Settings
    registry: Registry
    signers: dict[str, Signer]
    validator: Validator
    tracker: Tracker

    @property
    def store(self) -> Store:
        return self.validator.store

    @abstractmethod
    async def add_agency(self, code: str, *, inbox: bool = True) -> None:
        """Registered (with its broker user and inbox, unless not ``inbox``), and routed."""

    @abstractmethod
    async def add_gateway(self, name: str, patterns: list[str]) -> None:
        """Registered with its user and queue, and every agency routed again."""

    @abstractmethod
    async def unroute(self, code: str) -> None:
        """Remove the binding that delivers ``code``'s copies (the registry still has it)."""

    @abstractmethod
    def gateway(self, user: str) -> AsyncGateway:
        """The SDK, connected as ``user`` (``async with``)."""

    @abstractmethod
    async def submit(
        self,
        body: bytes,
        *,
        user: str = SENDER,
        routing_key: str | None = None,
        user_id: str | None = "same",
        type: str = "edoc",
    ) -> None:
        """Publish to edoc.submit as ``user`` would, with raw control over what the
        message claims (``user_id="same"``: the user's own)."""

    @abstractmethod
    async def received(self, queue: str, count: int) -> list[Received]:
        """The messages in ``queue``, once ``count`` have arrived (taken from it)."""

    @abstractmethod
    async def empty(self, *queues: str) -> None:
        """Assert nothing waits in ``queues``. Call it after an outcome that excludes them."""

    @abstractmethod
    async def until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Assert ``check`` holds once the workers have done their work."""

    async def report(
        self,
        package: edxml.DocumentPackage,
        reporter: str,
        *codes: str,
        now: datetime | None = None,
        about: str | None = None,
    ) -> None:
        """Statuses ``codes`` from ``reporter`` (unsigned, as status signatures are
        optional here); ``about`` names the recipient a recall (13) is for."""
        for code in codes:
            target: edxml.DocumentPackage | edxml.ResponseFor = package
            if about is not None:
                target = edxml.ResponseFor(organ_id=about, document_id=package.document_id)
            status = new_status(
                reporter=reporter,
                document=target,
                status_code=code,
                description=f"status {code}",
                now=now,
            )
            await self.submit(
                edxml.build(status), user=reporter, routing_key=reporter, type="status"
            )

    # --- what the tracker recorded ---------------------------------------------------------

    async def delivery(self, package: edxml.DocumentPackage, recipient: str) -> Delivery | None:
        async with self.store.sessions() as session:
            return (
                await session.execute(
                    select(Delivery)
                    .join(Document)
                    .where(
                        Document.document_id == package.document_id,
                        Delivery.recipient == recipient,
                    )
                )
            ).scalar_one_or_none()

    async def events(self, document_id: str | None, kind: str) -> list[EventRecord]:
        async with self.store.sessions() as session:
            rows = await session.execute(
                select(EventRecord)
                .where(EventRecord.edxml_document_id == document_id, EventRecord.kind == kind)
                .order_by(EventRecord.id)
            )
            return list(rows.scalars())

    async def recorded(
        self, package: edxml.DocumentPackage, statuses: int, anomalies: int = 0
    ) -> None:
        """Until the tracker recorded this many statuses and anomalies about ``package``."""

        async def done() -> bool:
            return (
                len(await self.events(package.document_id, "status")) >= statuses
                and len(await self.events(package.document_id, "anomaly")) >= anomalies
            )

        await self.until(done, f"{statuses} statuses and {anomalies} anomalies recorded")

    async def routed(self, package: edxml.DocumentPackage, *recipients: str) -> None:
        """Until the routing of ``package`` to each recipient is recorded."""

        async def done() -> bool:
            for recipient in recipients:
                found = await self.delivery(package, recipient)
                if found is None or found.transport_state != "routed":
                    return False
            return True

        await self.until(done, f"routed to {', '.join(recipients)}")
