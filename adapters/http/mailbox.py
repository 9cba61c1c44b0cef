"""The adapter's durable mailbox: what the broker delivered for its agencies, kept in the
store until their systems have taken it.

The broker's delivery is acked only once its row is committed (:class:`MailboxFiller`), so
a killed adapter loses nothing: what it held unacked comes again, and the row's unique
message id (the backbone's, stable across redeliveries: ``<backbone id>:<recipient>``)
keeps the second copy out. A system then takes its messages at its own pace: it lists
them, peeks (which locks the next one for ``lock`` seconds, so that two pollers do not
take the same), downloads the bytes as delivered, and acknowledges (``done``, or ``fail``
with a reason). A lock that expires unacknowledged gives the message to the next peek.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from backbone import edxml
from backbone.broker import topology
from backbone.broker.transport import Connection, Incoming, Transport
from backbone.config import Settings
from backbone.errors import PackageError
from backbone.safe import printable
from backbone.store import Store
from backbone.store.models import MailboxMessage
from backbone.workers.worker import TRANSIENT, Worker

from .messages import Message
from .webhooks import owe_calls

Result = Literal["done", "fail"]
PREFETCH = 64  # deliveries the filler holds unacked at once
LIST_LIMIT = 500  # most messages one listing returns
TRANSIENT_PAUSES = (0.5, 1.0, 2.0, 4.0)  # seconds between tries of a commit the store refused


class Conflict(Exception):
    """The message was acknowledged already, otherwise."""


def row_of(message: Incoming, limits: edxml.Limits) -> dict[str, object]:
    """A delivery as a mailbox row: its bytes as they came, what a listing shows read
    from the package (bounded), and its recipient from the routing key."""
    body = message.body
    digest = hashlib.sha256(body).hexdigest()
    recipient = printable(message.routing_key, 13) or ""
    row: dict[str, object] = {
        "message_id": printable(message.message_id, 300) or f"sha256:{digest}:{recipient}",
        "recipient": recipient,
        "kind": "status" if message.type == "status" else "edoc",
        "sender": None,
        "document_id": None,
        "backbone_id": printable(str(message.headers.get("x-backbone-id") or ""), 36) or None,
        "status_code": None,
        "content_sha256": digest,
        "size": len(body),
        "body": body,
        "received_at": datetime.now(UTC),
    }
    try:
        package = edxml.parse(body, limits)
    except PackageError:  # validated by the backbone; kept as it came all the same
        return row
    row["kind"] = package.kind
    row["sender"] = printable(package.sender, 13)
    row["document_id"] = printable(package.document_id, 255)
    if isinstance(package, edxml.StatusPackage):
        row["status_code"] = printable(package.header.status_code, 2)
    return row


class Mailbox:
    """The mailbox's queries; every one is bounded to the agencies the caller acts for."""

    def __init__(self, store: Store, on_calls_owed: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.on_calls_owed = on_calls_owed  # the webhooks' dispatcher wakes up

    async def put(self, row: dict[str, object]) -> None:
        """Commit this delivery, with the webhook calls it owes; one there already
        (redelivered) is left as it is."""
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        statement = (
            insert(MailboxMessage)
            .values(row)
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(MailboxMessage.id)
        )
        async with self.store.transaction() as session:
            new = await session.scalar(statement)
            owed = (
                0
                if new is None
                else await owe_calls(session, new, str(row["recipient"]), str(row["kind"]))
            )
        if owed:
            self.on_calls_owed()

    async def waiting(
        self,
        agencies: Collection[str],
        *,
        after: int = 0,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[Message]:
        """Messages not yet acknowledged, oldest first, after the cursor ``after``."""
        query = (
            select(MailboxMessage)
            .where(
                MailboxMessage.recipient.in_(agencies),
                MailboxMessage.acked_at.is_(None),
                MailboxMessage.id > after,
            )
            .order_by(MailboxMessage.id)
            .limit(max(1, min(limit, LIST_LIMIT)))
        )
        if kind is not None:
            query = query.where(MailboxMessage.kind == kind)
        if since is not None:
            query = query.where(MailboxMessage.received_at >= since)
        if until is not None:
            query = query.where(MailboxMessage.received_at < until)
        async with self.store.sessions() as session:
            return [Message.of(row) for row in (await session.execute(query)).scalars()]

    async def count(self, agencies: Collection[str], kind: str | None = None) -> int:
        query = select(func.count()).where(
            MailboxMessage.recipient.in_(agencies), MailboxMessage.acked_at.is_(None)
        )
        if kind is not None:
            query = query.where(MailboxMessage.kind == kind)
        async with self.store.sessions() as session:
            return int(await session.scalar(query) or 0)

    async def peek(
        self, agencies: Collection[str], lock: float, kind: str | None = None
    ) -> tuple[Message, str] | None:
        """Lock the oldest message not acknowledged and not locked (or whose lock
        expired) for ``lock`` seconds: it and its lock token, or None if none waits."""
        for _ in range(20):  # another poller may take the one found first
            now = datetime.now(UTC)
            free = or_(MailboxMessage.locked_until.is_(None), MailboxMessage.locked_until < now)
            query = (
                select(MailboxMessage.id)
                .where(
                    MailboxMessage.recipient.in_(agencies),
                    MailboxMessage.acked_at.is_(None),
                    free,
                )
                .order_by(MailboxMessage.id)
                .limit(1)
            )
            if kind is not None:
                query = query.where(MailboxMessage.kind == kind)
            token = str(uuid.uuid4())
            async with self.store.transaction() as session:
                found = await session.scalar(query)
                if found is None:
                    return None
                taken = await session.execute(
                    update(MailboxMessage)
                    .where(MailboxMessage.id == found, MailboxMessage.acked_at.is_(None), free)
                    .values(locked_until=now + timedelta(seconds=lock), lock_token=token)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    row = await session.get(MailboxMessage, found)
                    assert row is not None
                    await session.refresh(row)
                    return Message.of(row), token
            await asyncio.sleep(0)
        return None

    async def get(self, agencies: Collection[str], message: int) -> Message | None:
        async with self.store.sessions() as session:
            row = await session.get(MailboxMessage, message)
            return Message.of(row) if row is not None and row.recipient in agencies else None

    async def with_body(
        self, agencies: Collection[str], message: int
    ) -> tuple[Message, bytes] | None:
        """The message and its bytes, read once (for a status about it)."""
        async with self.store.sessions() as session:
            row = await session.get(MailboxMessage, message)
            return (Message.of(row), row.body) if row and row.recipient in agencies else None

    async def body(self, agencies: Collection[str], message: int) -> bytes | None:
        """The bytes as delivered."""
        async with self.store.sessions() as session:
            row = await session.get(MailboxMessage, message)
            return row.body if row is not None and row.recipient in agencies else None

    async def acknowledge(
        self, agencies: Collection[str], message: int, result: Result, reason: str | None
    ) -> Message | None:
        """Taken by its system (``done``) or not (``fail``, with why). The same answer
        again changes nothing; another raises :class:`Conflict`. None: no such message."""
        async with self.store.transaction() as session:
            row = await session.get(MailboxMessage, message, with_for_update=True)
            if row is None or row.recipient not in agencies:
                return None
            if row.acked_at is not None:
                if row.result != result:
                    raise Conflict(f"message {message} was acknowledged {row.result} already")
                return Message.of(row)
            row.acked_at, row.result = datetime.now(UTC), result
            row.reason = printable(reason, 2000) if reason else None
            row.locked_until = row.lock_token = None
            await session.flush()
            return Message.of(row)


class MailboxFiller(Worker):
    """The adapter's consumer of its gateway queue: each delivery committed to the mailbox,
    then acked (a store that fails is waited out, then the delivery is handed back)."""

    name = "mailbox"

    def __init__(
        self,
        settings: Settings,
        mailbox: Mailbox,
        gateway: str,
        *,
        transport: Transport | None = None,
        prefetch: int = PREFETCH,
    ) -> None:
        super().__init__(settings, None, transport=transport, prefetch=prefetch)
        self.mailbox = mailbox
        self.queue = topology.gateway_queue(gateway)

    async def started(self, connection: Connection) -> None:
        """It publishes nothing: a gateway may not write to the backbone's exchanges."""

    async def handle(self, message: Incoming) -> None:
        """The package is read for what a listing shows (on the event loop: lxml's schema
        validation is not safe in several threads at once); the row is committed (a store
        that fails is retried); then the delivery is acked. A bug hands it back, and past
        the delivery limit it goes to the quarantine."""
        try:
            row = row_of(message, self.settings.limits)
        except Exception as exc:
            self.log.error("delivery not read; handed back", error=repr(exc)[:300])
            await self.settle(message, requeue=True)
            return
        bound = self.log.bind(message_id=row["message_id"], agency=row["recipient"])
        for pause in (*TRANSIENT_PAUSES, None):
            try:
                await self.mailbox.put(row)
            except TRANSIENT as exc:
                if pause is None:
                    bound.warning("mailbox unavailable; handed back", error=repr(exc)[:300])
                    await self.settle(message, requeue=True)
                    return
                bound.warning("mailbox unavailable; retrying", error=repr(exc)[:300])
                await asyncio.sleep(pause)
            except Exception as exc:
                bound.error("delivery not kept; handed back", error=repr(exc)[:300])
                await self.settle(message, requeue=True)
                return
            else:
                bound.info("in the mailbox", kind=row["kind"], document_id=row["document_id"])
                await self.settle(message)
                return
