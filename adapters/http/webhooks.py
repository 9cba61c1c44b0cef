"""Webhooks: a system is called when a message reaches its mailbox (a new delivery, or a
status about a document it sent), instead of polling.

A call is owed from the moment the mailbox row is committed: both are written in one
transaction (:meth:`Mailbox.put <adapters.http.mailbox.Mailbox.put>`), so a crash loses no call. The
:class:`Dispatcher` makes the calls that are due, and one that fails (no answer, or not
2xx) is due again after a back-off (1, 2, 4, 8, then every MOST_BACKOFF seconds) until the
target answers: a target down for a while gets every call once it is back. What happened
last is kept on the webhook (``GET /v1/webhooks``).

Each call is a POST of JSON, ``{"event": "message", "webhook": id, "message": {...}}``,
signed with the webhook's own secret (given once, when it is made)::

    X-Backbone-Webhook      the webhook's id
    X-Backbone-Timestamp    Unix seconds
    X-Backbone-Signature    hex HMAC-SHA256(secret, timestamp + "\\n" + body)

A receiver checks the signature (:func:`.signing.webhook_signature`) and the timestamp's age,
and takes a call it has had before (same message id) as done: a call may come twice.
``signing.webhook_matches`` is that check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backbone.logs import get_logger
from backbone.store import Store
from backbone.store.models import AdapterCredential, MailboxMessage, Webhook, WebhookCall, utcnow

from .credentials import Vault
from .messages import Message, aware
from .signing import webhook_signature

log = get_logger("backbone.adapter.webhooks")
KINDS = ("edoc", "status")
MOST_BACKOFF = 10.0  # seconds between the tries of a call, at most
CALL_TIMEOUT = 10.0  # seconds a target has to answer
BATCH = 50  # calls made at once
IDLE = 1.0  # seconds between looks for due calls when nothing woke the dispatcher
MOST_WEBHOOKS = 10  # per credential


class WebhookRefused(ValueError):
    """A webhook cannot be made as asked (the message says why)."""


@dataclass(frozen=True)
class Listed:
    id: str
    url: str
    kinds: tuple[str, ...]
    created_at: datetime
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    pending: int


def checked_url(url: str) -> str:
    """An http(s) URL with a host, at most 2,000 characters, no credentials in it."""
    parts = urlsplit(url)
    if len(url) > 2000 or parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("a webhook's url is http:// or https:// with a host")
    if parts.username or parts.password:
        raise WebhookRefused("a webhook's url carries no credentials: calls are signed")
    return url


async def subscribe(
    session: AsyncSession, vault: Vault, key_id: str, url: str, kinds: Collection[str]
) -> tuple[Webhook, str]:
    """A new webhook of credential ``key_id`` and its secret (shown once)."""
    chosen = [k for k in KINDS if k in kinds]
    if not chosen or set(kinds) - set(KINDS):
        raise WebhookRefused(f"a webhook is called for {' and/or '.join(KINDS)}")
    count = await session.scalar(
        select(func.count()).where(Webhook.key_id == key_id, Webhook.removed_at.is_(None))
    )
    if (count or 0) >= MOST_WEBHOOKS:
        raise WebhookRefused(f"a credential has at most {MOST_WEBHOOKS} webhooks")
    secret = secrets.token_urlsafe(32)
    webhook = Webhook(
        key_id=key_id,
        url=checked_url(url),
        kinds=",".join(chosen),
        secret=vault.seal(secret.encode()),
    )
    session.add(webhook)
    await session.flush()
    return webhook, secret


async def listed(session: AsyncSession, key_id: str) -> list[Listed]:
    pending = (
        select(WebhookCall.webhook_id, func.count().label("n"))
        .where(WebhookCall.delivered_at.is_(None))
        .group_by(WebhookCall.webhook_id)
        .subquery()
    )
    rows = await session.execute(
        select(Webhook, pending.c.n)
        .outerjoin(pending, pending.c.webhook_id == Webhook.id)
        .where(Webhook.key_id == key_id, Webhook.removed_at.is_(None))
        .order_by(Webhook.created_at)
    )
    return [
        Listed(
            w.id,
            w.url,
            tuple(w.kinds.split(",")),
            aware(w.created_at) or w.created_at,
            aware(w.last_attempt_at),
            aware(w.last_success_at),
            w.last_error,
            int(n or 0),
        )
        for w, n in rows
    ]


async def remove(session: AsyncSession, key_id: str, webhook_id: str) -> bool:
    """Remove it (its calls not yet made are not made). False: not one of its webhooks."""
    webhook = await session.get(Webhook, webhook_id)
    if webhook is None or webhook.key_id != key_id or webhook.removed_at is not None:
        return False
    webhook.removed_at = utcnow()
    return True


async def owe_calls(session: AsyncSession, message: int, recipient: str, kind: str) -> int:
    """The calls a new mailbox row owes: one per webhook of a credential acting for its
    recipient, for its kind. How many."""
    rows = await session.execute(
        select(Webhook.id, Webhook.kinds, AdapterCredential.agencies)
        .join(AdapterCredential, AdapterCredential.key_id == Webhook.key_id)
        .where(Webhook.removed_at.is_(None), AdapterCredential.revoked_at.is_(None))
    )
    owed = [
        WebhookCall(webhook_id=webhook_id, message_id=message)
        for webhook_id, kinds, agencies in rows
        if kind in kinds.split(",") and recipient in agencies.split(",")
    ]
    session.add_all(owed)
    return len(owed)


@dataclass(frozen=True)
class _Due:
    call: int
    attempts: int
    webhook: str
    url: str
    secret: bytes
    message: Message


class Dispatcher:
    """Makes the calls that are due, until cancelled; :meth:`wake` when some are owed."""

    def __init__(self, store: Store, vault: Vault) -> None:
        self.store = store
        self.vault = vault
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled; a store or a target that fails is logged and tried again, so
        that the dispatcher never dies while the adapter serves."""
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT, follow_redirects=False) as client:
            while True:
                self._wake.clear()
                try:
                    due = await self._due()
                    outcomes = await asyncio.gather(
                        *(self._call(client, item) for item in due), return_exceptions=True
                    )
                except Exception as exc:  # the store away: try again later
                    log.warning("webhook calls cannot be read", error=repr(exc)[:300])
                    due, outcomes = [], []
                for failure in (o for o in outcomes if isinstance(o, Exception)):
                    log.warning("a webhook call was not recorded", error=repr(failure)[:300])
                if due and not any(isinstance(o, Exception) for o in outcomes):
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE)

    async def _due(self) -> list[_Due]:
        now = datetime.now(UTC)
        async with self.store.sessions() as session:
            rows = await session.execute(
                select(WebhookCall, Webhook, MailboxMessage)
                .join(Webhook, Webhook.id == WebhookCall.webhook_id)
                .join(MailboxMessage, MailboxMessage.id == WebhookCall.message_id)
                .where(
                    WebhookCall.delivered_at.is_(None),
                    WebhookCall.due_at <= now,
                    Webhook.removed_at.is_(None),
                )
                .order_by(WebhookCall.id)
                .limit(BATCH)
            )
            return [
                _Due(
                    call.id,
                    call.attempts,
                    webhook.id,
                    webhook.url,
                    self.vault.open(webhook.secret),
                    Message.of(message),
                )
                for call, webhook, message in rows
            ]

    async def _call(self, client: httpx.AsyncClient, due: _Due) -> None:
        message = due.message.model_dump(mode="json")
        body = json.dumps({"event": "message", "webhook": due.webhook, "message": message}).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-backbone-webhook": due.webhook,
            "x-backbone-timestamp": timestamp,
            "x-backbone-signature": webhook_signature(due.secret, timestamp, body),
        }
        error: str | None = None
        try:
            answer = await client.post(due.url, content=body, headers=headers)
            if not answer.is_success:
                error = f"answered {answer.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        now = datetime.now(UTC)
        async with self.store.transaction() as session:
            call = await session.get(WebhookCall, due.call)
            webhook = await session.get(Webhook, due.webhook)
            if call is None or webhook is None:
                return
            call.attempts = due.attempts + 1
            webhook.last_attempt_at = now
            if error is None:
                call.delivered_at = webhook.last_success_at = now
                webhook.last_error = None
            else:
                backoff = min(2.0**due.attempts, MOST_BACKOFF)
                call.due_at = now + timedelta(seconds=backoff)
                webhook.last_error = error[:500]
        if error is not None:
            log.info("webhook call failed; again later", webhook=due.webhook, error=error)
