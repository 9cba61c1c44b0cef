"""The HTTP adapter's application: ``/v1`` for document-management systems, ``/health``
and ``/metrics`` for the operators.

    adapter = Adapter(AdapterConfig(settings, gateway="dms-hanoi", amqp_url=...), vault)
    app = create_app(adapter)     # uvicorn serves it; its lifespan runs the adapter

The adapter is a gateway principal on the broker: it sends as the agencies its gateway
serves (the broker checks the routing key, the validator the principal's scope) and fills
its mailbox from the gateway's queue. A request is signed with a credential
(:mod:`.signing`, :mod:`.credentials`) and acts for that credential's agencies only: a
request that names another agency is refused (403); a message id outside its mailbox is
not found (404, the same as one that does not exist, so nothing tells it exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal, Self

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import UploadFile  # what a parsed form holds

from backbone import edxml
from backbone.broker import topology
from backbone.client import AsyncGateway, SendError
from backbone.config import Settings
from backbone.edxml.factory import File
from backbone.errors import BrokerError, PackageError
from backbone.logs import get_logger
from backbone.registry import Registry
from backbone.safe import derived_id, printable
from backbone.store import Store
from backbone.store.models import Document, EventRecord, IdempotentAnswer
from backbone.store.repository import directory_changes
from backbone.store.tracking import feed, timeline

from ..described import Described
from . import credentials, signing, webhooks
from .composing import Signers, StatusRequest
from .credentials import Credential, Vault
from .mailbox import Conflict, Mailbox, MailboxFiller, Result
from .messages import Message
from .problems import ENVELOPED, RESPONSES, Problem

log = get_logger("backbone.adapter.http")
LOCK_SECONDS = 300.0  # how long a peek locks a message by default
MOST_LOCK = 3600.0
MOST_ID = 2**63 - 1  # a mailbox id is a 64-bit integer in every database
XML = "application/xml"
MULTIPART, JSON = "multipart/form-data", "application/json"
MOST_FILES = 100
# what a send takes: the package's bytes (read as they are, so not a parameter FastAPI
# reads) or, when the adapter holds the agency's key, what it builds and signs
_PACKAGE = {XML: {"schema": {"type": "string", "contentMediaType": XML}}}
DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **_PACKAGE,
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["metadata"],
                    "properties": {
                        "metadata": {
                            "type": "string",
                            "contentMediaType": JSON,
                            "description": "the document to build (JSON: `Described`)",
                        },
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": MOST_FILES,
                        },
                    },
                }
            },
        },
    }
}
STATUS_BODY = {
    "requestBody": {
        "required": True,
        "content": {**_PACKAGE, JSON: {"schema": StatusRequest.model_json_schema()}},
    }
}


@dataclass(frozen=True)
class AdapterConfig:
    """What one adapter serves: the backbone's settings (database, limits), its gateway's
    name and broker URL (as that gateway's user), and how long a peek locks."""

    settings: Settings
    gateway: str
    amqp_url: str
    lock_seconds: float = LOCK_SECONDS


class Metrics:
    """The adapter's metrics, in a registry of its own (several apps in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "backbone_adapter_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.sent = Counter(
            "backbone_adapter_sent",
            "Packages the broker confirmed, by kind (edoc, status)",
            ["kind"],
            registry=self.registry,
        )
        self.acknowledged = Counter(
            "backbone_adapter_acknowledged",
            "Mailbox messages acknowledged by their systems, by result",
            ["result"],
            registry=self.registry,
        )


class Adapter:
    """The adapter's parts: its store, mailbox, broker connection and filler."""

    def __init__(self, config: AdapterConfig, vault: Vault, signers: Signers | None = None):
        self.config = config
        self.vault = vault
        self.signers = signers or Signers({}, config.settings.limits)
        self.store = Store(config.settings.database_url)
        self.webhooks = webhooks.Dispatcher(self.store, vault)
        self.mailbox = Mailbox(self.store, on_calls_owed=self.webhooks.wake)
        self.registry = Registry(self.store, ttl=config.settings.registry_ttl)
        self.replays = signing.ReplayGuard()
        self.metrics = Metrics()
        self.limit = config.settings.max_package_bytes
        self._gateway: AsyncGateway | None = None
        self.filler: MailboxFiller | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Connected to the broker, filling the mailbox; all closed after."""
        settings = self.config.settings
        gateway_settings = settings.model_copy(update={"amqp_url": self.config.amqp_url})
        filler = MailboxFiller(gateway_settings, self.mailbox, self.config.gateway)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.store.close)
            self._gateway = await stack.enter_async_context(
                AsyncGateway(
                    self.config.amqp_url, username=self.config.gateway, limits=settings.limits
                )
            )
            calling = asyncio.create_task(self.webhooks.run())
            stack.push_async_callback(_cancelled, calling)
            self.filler = await stack.enter_async_context(filler.running())
            log.info("http adapter ready", gateway=self.config.gateway)
            try:
                yield
            finally:
                self._gateway = self.filler = None

    @property
    def gateway(self) -> AsyncGateway:
        if self._gateway is None:
            raise Problem(503, "not-ready", "the adapter is not connected to the broker")
        return self._gateway


# --- what the API takes and gives ----------------------------------------------------------


class Submitted(BaseModel):
    """A package the broker has confirmed: the backbone validates it next (a refusal comes
    back as a status 02 in the sender's mailbox, naming the fault)."""

    kind: Literal["edoc", "status"]
    document_id: str
    sender: str
    message_id: str = Field(description="the submission's id: `backbone status` finds it")
    recipients: list[str] = Field(default_factory=list)
    status_code: str | None = None


class Page(BaseModel):
    items: list[Message]
    next: int | None = Field(description="the cursor of the next page (`after=`), if any")


class Locked(BaseModel):
    message: Message
    lock_token: str


class Acknowledgement(BaseModel):
    result: Literal["done", "fail"]
    reason: str | None = Field(None, max_length=2000, description="why, for `fail`")


class Count(BaseModel):
    count: int


class TimelineEvent(BaseModel):
    kind: str
    status_code: str | None
    description: str | None
    occurred_at: datetime | None
    recorded_at: datetime

    @classmethod
    def of(cls, event: EventRecord) -> Self:
        return cls.model_validate(
            {
                "id": event.id,
                "backbone_id": event.document_pk,
                "document_id": event.edxml_document_id,
                "recipient": event.recipient,
                "kind": event.kind,
                "status_code": event.status_code,
                "description": event.description,
                "occurred_at": event.occurred_at,
                "recorded_at": event.recorded_at,
            }
        )


class RecipientStatus(BaseModel):
    recipient: str
    transport: str
    status_code: str | None
    history: list[TimelineEvent]


class SentDocument(BaseModel):
    backbone_id: str
    sender: str
    document_id: str
    subject: str | None
    accepted_at: datetime | None
    recipients: list[RecipientStatus]


class FeedEvent(TimelineEvent):
    id: int = Field(description="the cursor: read on with `after=` this id")
    backbone_id: str | None
    document_id: str | None
    recipient: str | None = Field(description="whom the event is about (a status: its reporter)")


class Feed(BaseModel):
    items: list[FeedEvent]
    next: int | None = Field(description="the cursor of the next page (`after=`), if any")


class DirectoryEntry(BaseModel):
    code: str
    name: str
    parent: str | None
    level: int
    deleted: bool = Field(description="removed from the registry: send it nothing")
    version: int
    hub: str | None = Field(description="the gateway that serves it, if not its own system")


class Directory(BaseModel):
    items: list[DirectoryEntry]
    version: int = Field(description="ask with `since=` this next time")
    more: bool = Field(description="more changes wait: ask again at once")


class Capability(BaseModel):
    agency: str
    registered: bool
    active: bool
    reachable: bool = Field(description="a queue receives its deliveries")


class Subscription(BaseModel):
    url: str = Field(max_length=2000, description="called with a signed POST for each message")
    kinds: list[Literal["edoc", "status"]] = Field(
        default=["edoc", "status"], min_length=1, max_length=2
    )


class Subscribed(BaseModel):
    id: str
    url: str
    kinds: list[str]
    secret: str = Field(description="signs every call; shown this once")


class WebhookState(BaseModel):
    id: str
    url: str
    kinds: list[str]
    created_at: datetime
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    pending: int = Field(description="calls not yet answered 2xx")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    broker: bool
    database: bool


# --- the application ----------------------------------------------------------------------


async def serve(adapter: Adapter, server: uvicorn.Server) -> None:
    """The adapter connected first (a broker or a database that fails ends it with the
    backbone's error before anything listens), then uvicorn until it is told to exit, then
    the adapter stopped: what it holds unacked is handed back."""
    async with adapter.running():
        await server.serve()


def create_app(adapter: Adapter) -> FastAPI:
    """The application of a running adapter (see :func:`serve`)."""
    app = FastAPI(
        title="Backbone HTTP adapter",
        version="1",
        summary="Document-management systems send and receive edXML packages over HTTP.",
        responses=RESPONSES,
    )
    app.state.adapter = adapter
    _errors(app)
    _metrics(app, adapter)
    from .vdxp import router  # built on this module's parts, so imported once it is loaded

    app.include_router(router)

    @app.post("/v1/documents", status_code=202, tags=["send"], openapi_extra=DOCUMENT_BODY)
    async def send_document(
        request: Request,
        credential: Caller,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Submitted:
        """Send a signed edXML document package (the body, `application/xml`), as it is;
        or, if the adapter holds the sender's key, a `multipart/form-data` of `metadata`
        (JSON) and `files`, which it builds and signs."""
        return await _send(adapter, request, credential, "edoc", idempotency_key)

    @app.post("/v1/statuses", status_code=202, tags=["send"], openapi_extra=STATUS_BODY)
    async def send_status(
        request: Request,
        credential: Caller,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Submitted:
        """Send a signed edXML status package (01 to 06, 02 with its reason); or, if the
        adapter holds the reporter's key, `{"message": id, "code": "03"}` (JSON) about a
        received document, which it builds and signs."""
        return await _send(adapter, request, credential, "status", idempotency_key)

    @app.get("/v1/documents/{document_id:path}", tags=["statuses"])
    async def sent_document(
        document_id: Annotated[str, PathParam(max_length=255)],
        credential: Caller,
        sender: Annotated[str | None, Query(max_length=13)] = None,
    ) -> SentDocument:
        """A sent document's status per recipient, with each one's history. The
        DocumentId as it is, its `/` too (`000.00.00.H41,2026/12/06,7/UBND-VP`)."""
        senders = _agencies(credential, sender)
        async with adapter.store.sessions() as session:
            document = await session.scalar(
                select(Document)
                .where(Document.document_id == document_id, Document.sender.in_(senders))
                .order_by(Document.submitted_at.desc())
                .limit(1)
            )
            if document is None:
                raise Problem(404, "not-found", "no document of yours has this DocumentId")
            deliveries, events = await timeline(session, document.id)
        return SentDocument(
            backbone_id=document.id,
            sender=document.sender,
            document_id=document.document_id,
            subject=document.subject,
            accepted_at=document.accepted_at,
            recipients=[
                RecipientStatus(
                    recipient=d.recipient,
                    transport=d.transport_state,
                    status_code=d.status_code,
                    history=[TimelineEvent.of(e) for e in events if e.recipient == d.recipient],
                )
                for d in deliveries
            ],
        )

    @app.get("/v1/inbox", tags=["receive"])
    async def inbox(
        credential: Caller,
        after: Annotated[int, Query(ge=0, le=MOST_ID)] = 0,
        kind: Annotated[Literal["edoc", "status"] | None, Query()] = None,
        agency: Annotated[str | None, Query(max_length=13)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Page:
        """What waits to be acknowledged, oldest first; `next` is the cursor of the rest."""
        entries = await adapter.mailbox.waiting(
            _agencies(credential, agency),
            after=after,
            kind=kind,
            since=since,
            until=until,
            limit=limit,
        )
        items = list(entries)
        return Page(items=items, next=items[-1].id if len(items) == limit else None)

    @app.get("/v1/inbox/count", tags=["receive"])
    async def count(
        credential: Caller,
        kind: Annotated[Literal["edoc", "status"] | None, Query()] = None,
        agency: Annotated[str | None, Query(max_length=13)] = None,
    ) -> Count:
        """How many wait to be acknowledged."""
        return Count(count=await adapter.mailbox.count(_agencies(credential, agency), kind))

    @app.post(
        "/v1/inbox/peek",
        tags=["receive"],
        response_model=Locked,
        responses={204: {"description": "none waits"}},
    )
    async def peek(
        credential: Caller,
        kind: Annotated[Literal["edoc", "status"] | None, Query()] = None,
        agency: Annotated[str | None, Query(max_length=13)] = None,
        lock: Annotated[float | None, Query(gt=0, le=MOST_LOCK)] = None,
    ) -> Any:
        """Lock the next message for `lock` seconds (the adapter's default otherwise); one
        not acknowledged in time is given to the next peek."""
        found = await adapter.mailbox.peek(
            _agencies(credential, agency), lock or adapter.config.lock_seconds, kind
        )
        if found is None:
            return Response(status_code=204)
        entry, token = found
        return Locked(message=entry, lock_token=token)

    @app.get("/v1/inbox/{message}", tags=["receive"])
    async def message(message: MessageId, credential: Caller) -> Message:
        return await _entry(adapter, credential, message)

    @app.get(
        "/v1/inbox/{message}/package",
        tags=["receive"],
        response_class=Response,
        responses={200: {"content": {XML: {}}, "description": "the package, byte for byte"}},
    )
    async def package(message: MessageId, credential: Caller) -> Response:
        """The package as it was delivered, byte for byte (its signature verifies)."""
        body = await adapter.mailbox.body(credential.agencies, message)
        if body is None:
            raise _no_message(message)
        digest = hashlib.sha256(body).hexdigest()
        return Response(body, media_type=XML, headers={"X-Content-SHA256": digest})

    @app.get(
        "/v1/inbox/{message}/attachments/{content_id}",
        tags=["receive"],
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    async def attachment(
        message: MessageId,
        content_id: Annotated[str, PathParam(max_length=255)],
        credential: Caller,
    ) -> Response:
        """One attachment of a delivered document, decoded, by its content id."""
        body = await adapter.mailbox.body(credential.agencies, message)
        if body is None:
            raise _no_message(message)
        package = await asyncio.to_thread(edxml.parse, body, adapter.config.settings.limits)
        for item in getattr(package, "attachments", ()):
            if item.content_id == content_id:
                return Response(
                    item.data,
                    media_type=_media_type(item.content_type),
                    headers={"Content-Disposition": _disposition(item.attachment_name)},
                )
        raise Problem(404, "not-found", "the package has no attachment with this content id")

    @app.post("/v1/inbox/{message}/ack", tags=["receive"])
    async def ack(message: MessageId, answer: Acknowledgement, credential: Caller) -> Message:
        """Taken (`done`), or not (`fail`, with why); the message leaves the listing. If
        the adapter holds the recipient's key, it sends the document's 01 (or its 02 with
        the reason) first."""
        entry = await acknowledge(adapter, credential, message, answer.result, answer.reason)
        if entry is None:
            raise _no_message(message)
        return entry

    @app.post("/v1/webhooks", status_code=201, tags=["webhooks"])
    async def subscribe(subscription: Subscription, credential: Caller) -> Subscribed:
        """Be called at `url` for each new message of this credential's mailbox (of the
        kinds asked for): a signed POST, retried with back-off until it is answered 2xx."""
        try:
            async with adapter.store.transaction() as session:
                made, secret = await webhooks.subscribe(
                    session, adapter.vault, credential.key_id, subscription.url, subscription.kinds
                )
        except webhooks.WebhookRefused as exc:
            raise Problem(422, "webhook-refused", str(exc), path="url") from exc
        return Subscribed(id=made.id, url=made.url, kinds=made.kinds.split(","), secret=secret)

    @app.get("/v1/webhooks", tags=["webhooks"])
    async def subscriptions(credential: Caller) -> list[WebhookState]:
        """This credential's webhooks: the last attempt, success and error, what is owed."""
        async with adapter.store.sessions() as session:
            found = await webhooks.listed(session, credential.key_id)
        return [
            WebhookState(
                id=w.id,
                url=w.url,
                kinds=list(w.kinds),
                created_at=w.created_at,
                last_attempt_at=w.last_attempt_at,
                last_success_at=w.last_success_at,
                last_error=w.last_error,
                pending=w.pending,
            )
            for w in found
        ]

    @app.delete("/v1/webhooks/{webhook}", status_code=204, tags=["webhooks"])
    async def unsubscribe(
        webhook: Annotated[str, PathParam(max_length=36)], credential: Caller
    ) -> Response:
        """Called no more (what it was owed is not made)."""
        async with adapter.store.transaction() as session:
            if not await webhooks.remove(session, credential.key_id, webhook):
                raise Problem(404, "not-found", "you have no webhook with this id")
        return Response(status_code=204)

    @app.get("/v1/statuses", tags=["statuses"])
    async def status_feed(
        credential: Caller,
        after: Annotated[int, Query(ge=0, le=MOST_ID)] = 0,
        agency: Annotated[str | None, Query(max_length=13)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Feed:
        """Everything recorded about your sent documents (accepted, delivered, each status,
        anomalies, refusals), in the order the backbone recorded it; read on with
        `after=next`. Nothing needs acknowledging: the cursor is yours to keep."""
        async with adapter.store.sessions() as session:
            events = await feed(session, _agencies(credential, agency), after, limit)
        items = [FeedEvent.of(e) for e in events]
        return Feed(items=items, next=items[-1].id if len(items) == limit else None)

    @app.get("/v1/directory/agencies", tags=["directory"])
    async def directory(
        _: Caller,
        since: Annotated[int, Query(ge=0, le=MOST_ID, description="a `version` seen")] = 0,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    ) -> Directory:
        """The agencies added, changed or removed since `version` (0: all of them), in
        order; keep the answer's `version` and ask with it next time."""
        async with adapter.store.sessions() as session:
            changes = await directory_changes(session, since, limit)
        served = await hubs(adapter.registry) if changes else {}
        return Directory(
            items=[
                DirectoryEntry(
                    code=a.code,
                    name=a.name,
                    parent=a.parent_code,
                    level=a.level,
                    deleted=not a.active,
                    version=a.version,
                    hub=served.get(a.code),
                )
                for a in changes
            ],
            version=changes[-1].version if changes else since,
            more=len(changes) == limit,
        )

    @app.get("/v1/directory/agencies/{code}", tags=["directory"])
    async def capability(code: Annotated[str, PathParam(max_length=13)], _: Caller) -> Capability:
        """Can a document be sent to this agency now (registered, active, served)?"""
        agency = await adapter.registry.get_agency(code)
        queues = await adapter.registry.delivery_queues() if agency is not None else {}
        return Capability(
            agency=code,
            registered=agency is not None,
            active=agency is not None and agency.active,
            reachable=agency is not None and agency.active and queues.get(code) is not None,
        )

    @app.get("/health", tags=["operations"])
    async def health(response: Response) -> Health:
        """Is the adapter connected to the broker and its database?"""
        broker = adapter.filler is not None and adapter.filler.consuming
        try:
            async with adapter.store.sessions() as session:
                await session.scalar(select(1))
            database = True
        except SQLAlchemyError:
            database = False
        if not (broker and database):
            response.status_code = 503
        return Health(
            status="ok" if broker and database else "degraded", broker=broker, database=database
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus's text format."""
        return Response(generate_latest(adapter.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# --- the parts of a request ---------------------------------------------------------------


async def _caller(request: Request) -> Credential:
    """The credential that signed this request (its body read, bounded, on the way)."""
    adapter: Adapter = request.app.state.adapter
    body = await bounded_body(request, adapter.limit)
    now = time.time()
    key_id = request.headers.get(signing.KEY) or ""
    credential = None
    if signing.is_key_id(key_id):
        async with adapter.store.sessions() as session:
            credential = await credentials.active(session, adapter.vault, key_id)
    try:
        signing.verify(
            request.headers,
            request.method,
            _target(request),
            body,
            lambda _: credential.secret if credential is not None else None,
            now,
        )
        adapter.replays.check(request.headers, now)
    except signing.SignatureRefused as exc:
        raise Problem(
            401,
            exc.reason.value,
            str(exc),
            path=exc.header or None,
            headers={"WWW-Authenticate": "Backbone-HMAC-SHA256"},
        ) from exc
    assert credential is not None
    return credential


Caller = Annotated[Credential, Depends(_caller)]
MessageId = Annotated[int, PathParam(ge=1, le=MOST_ID, description="the mailbox's id")]


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _target(request: Request) -> str:
    """The request target as the client sent it (what it signed): raw path and query."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string") or b""
    target = path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes before more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body


def _too_large(limit: int) -> Problem:
    return Problem(413, "too-large", f"the body is larger than the {limit} bytes allowed")


async def hubs(registry: Registry) -> dict[str, str]:
    """Each agency a gateway serves, and that gateway's name."""
    gateways = {
        topology.gateway_queue(g.username): g.username for g in await registry.list_gateways()
    }
    return {
        code: gateways[queue]
        for code, queue in (await registry.delivery_queues()).items()
        if queue in gateways
    }


def _agencies(credential: Credential, agency: str | None) -> frozenset[str]:
    """The agencies a request acts for: one it names (which must be the credential's), or
    all of the credential's."""
    if agency is None:
        return credential.agencies
    if agency not in credential.agencies:
        raise Problem(
            403,
            "not-your-agency",
            "this credential does not act for that agency",
            value=printable(agency, 13),
        )
    return frozenset({agency})


async def _entry(adapter: Adapter, credential: Credential, message: int) -> Message:
    entry = await adapter.mailbox.get(credential.agencies, message)
    if entry is None:
        raise _no_message(message)
    return entry


def _no_message(message: int) -> Problem:
    return Problem(404, "not-found", f"no message {message} in your mailbox")


async def _send(
    adapter: Adapter,
    request: Request,
    credential: Credential,
    kind: str,
    idempotency_key: str | None,
) -> Submitted:
    """A package as it is, or one the adapter builds and signs (a retry with the same
    Idempotency-Key and body gets the first answer, nothing built again)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type in (XML, "text/xml"):
        return await submit(adapter, credential, body, kind, idempotency_key)
    if kind == "edoc" and content_type == MULTIPART:
        build = partial(_composed_document, adapter, request, credential)
    elif kind == "status" and content_type == JSON:
        build = partial(_composed_status, adapter, credential, body)
    else:
        built = MULTIPART if kind == "edoc" else JSON
        raise Problem(415, "media-type", f"send {XML} (or {built})", value=content_type)
    digest = hashlib.sha256(body).hexdigest()  # of what was asked, not of what is built
    return await submit(adapter, credential, build, kind, idempotency_key, digest)


async def _composed_document(adapter: Adapter, request: Request, credential: Credential) -> bytes:
    """The document a multipart send describes, built and signed (its parts' spooled
    files closed after)."""
    try:
        async with request.form(max_files=MOST_FILES, max_fields=MOST_FILES + 1) as form:
            metadata = form.get("metadata")
            if not isinstance(metadata, str):
                why = "the metadata part (JSON) is missing"
                raise Problem(422, "metadata-missing", why, path="metadata")
            try:
                described = Described.model_validate_json(metadata)
            except ValidationError as exc:
                raise _invalid(exc, "metadata") from exc
            _agencies(credential, described.sender)
            files = [
                File(
                    name=printable(upload.filename, 255) or "attachment",
                    data=await upload.read(),
                    content_type=_media_type(upload.content_type),
                )
                for name, upload in form.multi_items()
                if name == "files" and isinstance(upload, UploadFile)
            ]
    except HTTPException as exc:
        raise Problem(400, "multipart-invalid", str(exc.detail)) from exc
    return await adapter.signers.document(described, files)


async def _composed_status(adapter: Adapter, credential: Credential, body: bytes) -> bytes:
    try:
        wanted = StatusRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc, "body") from exc
    found = await adapter.mailbox.with_body(credential.agencies, wanted.message)
    if found is None:
        raise _no_message(wanted.message)
    entry, received = found
    if entry.kind != "edoc":
        raise Problem(
            422, "not-a-document", "a status is about a received document", path="message"
        )
    return await adapter.signers.status(entry.recipient, received, wanted.code, wanted.description)


async def acknowledge(
    adapter: Adapter, credential: Credential, message: int, result: Result, reason: str | None
) -> Message | None:
    """A received message taken (``done``) or not (``fail``); first its document's 01 or
    02 when the adapter holds the recipient's key (its id derived from the message and the
    code, so a retried acknowledgement sends the same submission). None: no such message."""
    found = (
        await adapter.mailbox.with_body(credential.agencies, message) if adapter.signers else None
    )
    if found is not None and _answerable(adapter, found[0]):
        waiting, received = found
        code = "01" if result == "done" else "02"
        status = await adapter.signers.status(
            waiting.recipient,
            received,
            code,
            (reason or "refused by its system") if code == "02" else None,
        )
        await _submitted(adapter, status, derived_id("ack", str(message), code))
    try:
        entry = await adapter.mailbox.acknowledge(credential.agencies, message, result, reason)
    except Conflict as exc:
        raise Problem(409, "acknowledged", str(exc)) from exc
    if entry is not None:
        adapter.metrics.acknowledged.labels(result).inc()
        log.info("acknowledged", message=message, result=result, agency=entry.recipient)
    return entry


def _answerable(adapter: Adapter, entry: Message) -> bool:
    """Does acknowledging this message send its document's 01 or 02 (a document not yet
    acknowledged, for an agency whose key the adapter holds)?"""
    return (
        entry.acknowledged_at is None
        and entry.kind == "edoc"
        and adapter.signers.holds(entry.recipient)
    )


async def _submitted(adapter: Adapter, package: bytes, message_id: str) -> None:
    try:
        await adapter.gateway.send(package, message_id=message_id)
    except (SendError, BrokerError) as exc:
        raise Problem(503, "broker", f"the broker did not take the package: {exc}") from exc


def _invalid(exc: ValidationError, part: str) -> Problem:
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {}
    where = ".".join(str(p) for p in (part, *first.get("loc", ())))
    return Problem(422, "request-invalid", str(first.get("msg", "not valid")), path=where)


async def submit(
    adapter: Adapter,
    credential: Credential,
    package: bytes | Callable[[], Awaitable[bytes]],
    kind: str,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
) -> Submitted:
    """Send a package for the credential's agency once the broker confirms it (refused as
    a :class:`Problem`: not edXML, the wrong kind, another agency's). ``package`` is its
    bytes, or what builds them, called only if no first answer is kept. An
    Idempotency-Key keeps the answer for the request whose body has ``request_digest``
    (the package's own, if not given)."""
    if isinstance(package, bytes):
        digest = request_digest or hashlib.sha256(package).hexdigest()
    else:
        assert request_digest is not None, "a package built on demand needs the request's"
        digest = request_digest
    if idempotency_key is not None:
        first = await _first_answer(adapter, credential, idempotency_key, digest)
        if first is not None:
            return first
    body = package if isinstance(package, bytes) else await package()
    try:
        parsed = await asyncio.to_thread(edxml.parse, body, adapter.config.settings.limits)
    except PackageError as exc:
        raise Problem.of_issue(422, exc.issues[0]) from exc
    if parsed.kind != kind:
        raise Problem(422, "wrong-kind", f"a {parsed.kind} package is sent as a {kind} one")
    sender = parsed.sender or ""
    if sender not in credential.agencies:
        raise Problem(
            403,
            "not-your-agency",
            "this credential does not send for the package's sender",
            path="Header/From/OrganId",
            value=printable(sender, 13),
        )
    message_id = (
        derived_id("http", credential.key_id, idempotency_key)
        if idempotency_key is not None
        else uuid.uuid4().hex
    )
    await _submitted(adapter, body, message_id)
    adapter.metrics.sent.labels(kind).inc()
    answer = Submitted(
        kind=parsed.kind,
        document_id=printable(parsed.document_id, 255) or "",
        sender=sender,
        message_id=message_id,
        recipients=[r or "" for r in getattr(parsed, "recipients", ())],
        status_code=parsed.header.status_code if isinstance(parsed, edxml.StatusPackage) else None,
    )
    log.info(
        "sent", kind=kind, agency=sender, document_id=answer.document_id, message_id=message_id
    )
    if idempotency_key is not None:
        await _keep_answer(adapter, credential, idempotency_key, digest, answer)
    return answer


async def _first_answer(
    adapter: Adapter, credential: Credential, key: str, digest: str
) -> Submitted | None:
    async with adapter.store.sessions() as session:
        row = await session.get(IdempotentAnswer, (credential.key_id, key))
    if row is None:
        return None
    if row.request_sha256 != digest:
        raise Problem(
            422,
            "idempotency-key-reused",
            "this Idempotency-Key was used for another body",
            path="Idempotency-Key",
        )
    return Submitted.model_validate(json.loads(row.answer))


async def _keep_answer(
    adapter: Adapter, credential: Credential, key: str, digest: str, answer: Submitted
) -> None:
    try:
        async with adapter.store.transaction() as session:
            session.add(
                IdempotentAnswer(
                    key_id=credential.key_id,
                    idempotency_key=key,
                    request_sha256=digest,
                    status=202,
                    answer=answer.model_dump_json(),
                )
            )
    except SQLAlchemyError:  # a concurrent retry kept it first: the same answer
        log.info("idempotent answer kept by a concurrent retry", message_id=answer.message_id)


def _media_type(declared: str | None) -> str:
    """An attachment's declared type, if it looks like one (it comes from the package)."""
    if (
        declared
        and len(declared) <= 100
        and declared.count("/") == 1
        and all(c.isascii() and (c.isalnum() or c in "/.+-_") for c in declared)
    ):
        return declared
    return "application/octet-stream"


def _disposition(name: str) -> str:
    """``attachment`` with the name made safe for a header (it comes from the package)."""
    safe = "".join(c for c in name if c.isascii() and (c.isalnum() or c in "._- "))[:200]
    return f'attachment; filename="{safe or "attachment"}"'


def _errors(app: FastAPI) -> None:
    """Every error answered as a problem (on ``/vdxp``, in the axis's envelope)."""

    def answer(request: Request, problem: Problem) -> JSONResponse:
        if request.url.path.startswith(ENVELOPED):
            return problem.envelope()
        return problem.response()

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        return answer(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        value = first.get("input")
        refused = Problem(
            422,
            "request-invalid",
            str(first.get("msg", "the request is not valid")),
            path=where or None,
            value=printable(value if isinstance(value, str) else None, 200),
        )
        return answer(request, refused)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug: answered as a problem, logged with where (never the request's body)."""
        log.error("unexpected failure", error=repr(exc)[:300], path=request.url.path[:200])
        return answer(request, Problem(500, "internal", "the adapter failed on this request"))

    @app.exception_handler(SQLAlchemyError)
    async def database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("database unavailable", error=type(exc).__name__)
        return answer(request, Problem(503, "database", "the adapter's database is unavailable"))


def _metrics(app: FastAPI, adapter: Adapter) -> None:
    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        adapter.metrics.requests.labels(template, request.method, str(response.status_code)).inc()
        return response


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as ``schemas/openapi.yaml`` holds it (made without a
    broker or a database: nothing is connected)."""
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    config = AdapterConfig(settings, gateway="openapi", amqp_url="amqp://localhost/")
    return create_app(Adapter(config, Vault(Vault.new_key()))).openapi()
