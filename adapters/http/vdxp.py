"""``/vdxp``: the national axis SDK's operations (``com.vpcp.services``, SDK 2.0.1), so that a
document-management system written for the axis switches by changing its endpoint
(``service.endpoint`` = the adapter's address + ``/vdxp``), its ``systemid`` (a credential's
id) and its ``secret`` (that credential's secret).

What is the SDK's: the operation names and paths, the signed headers (every field of the
call's ``jsonHeaders`` sent as ``XroadVnpt-<field>``, their JSON in
``XroadVnpt-sign-header``, its hex HMAC-SHA256 with the secret in ``XroadVnpt-hash-header``),
the fields read (``messagetype``, ``docId``/``docid``, ``status``), the envelope
``{status: OK|FAIL, ErrorCode, ErrorDesc, data}`` with ``ErrorCode`` "0" for success, and
each result's field names. What differs is said in README ("The axis SDK's operations").

Only what the signed header carries is read: a field sent beside it, unsigned, is ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from sqlalchemy import select

from backbone.safe import printable
from backbone.store.models import Agency, Document
from backbone.store.repository import directory_changes, list_agencies
from backbone.store.tracking import timeline

from . import credentials
from .app import MOST_ID, Adapter, acknowledge, bounded_body, hubs, submit
from .credentials import Credential
from .mailbox import Result
from .messages import aware
from .problems import ENVELOPED, TITLES, Problem
from .signing import is_key_id

PREFIX = ENVELOPED.rstrip("/")
HEADER = "xroadvnpt-"  # every field's header: XroadVnpt-<field>
SIGNED = "xroadvnpt-sign-header"
SIGNATURE = "xroadvnpt-hash-header"
MOST_SIGNED = 8192  # characters of the signed header read
RESULTS = {"processing", "done", "fail"}  # updateStatus's values
OK = {"status": "OK", "ErrorCode": "0", "ErrorDesc": "Success"}


class Envelope(BaseModel):
    """Every answer: ``data`` (a list, a package in base64), ``DocId`` or ``count`` when
    the operation has one."""

    status: Literal["OK", "FAIL"]
    ErrorCode: str
    ErrorDesc: str
    data: Any = None
    DocId: str | None = None
    count: int | None = None


FAILURES: dict[int | str, dict[str, Any]] = {
    status: {"model": Envelope, "description": title} for status, title in TITLES.items()
}
router = APIRouter(prefix=PREFIX, tags=["vdxp"], responses=FAILURES)


def sign_headers(system_id: str, secret: str, fields: Mapping[str, str]) -> dict[str, str]:
    """The headers the SDK sends for a call with ``fields`` (its ``jsonHeaders``): for
    clients and tests; the adapter checks the same."""
    values = {"systemid": system_id, **fields}
    signed = json.dumps({f"XroadVnpt-{k}": v for k, v in values.items()})  # ASCII: a header
    return {
        **{f"XroadVnpt-{k}": v for k, v in values.items()},
        "XroadVnpt-sign-header-key": ";".join(values),
        "XroadVnpt-sign-header": signed,
        "XroadVnpt-hash-header": _hmac(secret.encode(), signed),
    }


def _hmac(secret: bytes, signed: str) -> str:
    return hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()


class Call:
    """A signed call: its credential and the fields it signed (names in lower case)."""

    def __init__(self, adapter: Adapter, credential: Credential, fields: dict[str, str]):
        self.adapter, self.credential, self.fields = adapter, credential, fields

    def field(self, *names: str) -> str | None:
        return next((self.fields[n] for n in names if n in self.fields), None)

    def message(self) -> int:
        """The mailbox id the call names (``docId``)."""
        value = self.field("docid") or ""
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MOST_ID:
            raise Problem(400, "docid-invalid", "docId must name a received message", path="docId")
        return int(value)

    def kind(self) -> str:
        value = (self.field("messagetype") or "edoc").lower()
        if value not in ("edoc", "status"):
            raise Problem(
                400,
                "messagetype-invalid",
                "messagetype is edoc or status",
                path="messagetype",
                value=printable(value, 20),
            )
        return value


async def _call(request: Request) -> Call:
    """The call's credential and signed fields, or a refusal (401)."""
    adapter: Adapter = request.app.state.adapter
    await bounded_body(request, adapter.limit)
    signed = request.headers.get(SIGNED) or ""
    signature = (request.headers.get(SIGNATURE) or "").lower()
    if not signed or not signature:
        raise _unsigned("the call carries no XroadVnpt-sign-header and XroadVnpt-hash-header")
    fields = _fields(signed)
    key_id = fields.get("systemid") or ""
    credential = None
    if is_key_id(key_id) and key_id == request.headers.get(HEADER + "systemid"):
        async with adapter.store.sessions() as session:
            credential = await credentials.active(session, adapter.vault, key_id)
    if credential is None:
        raise _unsigned("no active credential has this systemid", "XroadVnpt-systemid")
    if not hmac.compare_digest(_hmac(credential.secret, signed), signature):
        raise _unsigned("XroadVnpt-hash-header does not match", "XroadVnpt-hash-header")
    return Call(adapter, credential, fields)


def _fields(signed: str) -> dict[str, str]:
    """The signed header's fields (``XroadVnpt-`` taken off, names in lower case)."""
    try:
        decoded = json.loads(signed[:MOST_SIGNED]) if len(signed) <= MOST_SIGNED else None
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise _unsigned("XroadVnpt-sign-header is not a JSON object", "XroadVnpt-sign-header")
    return {
        key[len(HEADER) :].lower(): value
        for key, value in decoded.items()
        if isinstance(key, str) and key.lower().startswith(HEADER) and isinstance(value, str)
    }


def _unsigned(detail: str, path: str | None = None) -> Problem:
    return Problem(401, "signature-refused", detail, path=path)


Signed = Annotated[Call, Depends(_call)]
EDXML_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    }
}


# --- sending ------------------------------------------------------------------------------


@router.post("/sendEdoc", openapi_extra=EDXML_BODY, response_model_exclude_none=True)
async def send_edoc(request: Request, call: Signed) -> Envelope:
    """Send a signed edXML package (the body): ``messagetype`` edoc or status. ``DocId`` is
    its DocumentId, which ``getSentEdocList`` takes. The same bytes again (the SDK retries
    a call that failed on the way) get the first answer and are not sent twice."""
    body = (await request.body()).rstrip(b"\r\n")  # the SDK ends the file with CRLF
    once = "vdxp-" + hashlib.sha256(body).hexdigest()
    sent = await submit(call.adapter, call.credential, body, call.kind(), once)
    return Envelope(**OK, DocId=sent.document_id)


@router.post("/getSentEdocList", response_model_exclude_none=True)
async def sent_edoc_list(call: Signed) -> Envelope:
    """A sent document's state per recipient (``docId``: its DocumentId)."""
    document_id = call.field("docid")
    if not document_id:
        raise Problem(400, "docid-invalid", "docId must name a sent document", path="docId")
    async with call.adapter.store.sessions() as session:
        document = await session.scalar(
            select(Document)
            .where(
                Document.document_id == document_id,
                Document.sender.in_(call.credential.agencies),
            )
            .order_by(Document.submitted_at.desc())
            .limit(1)
        )
        if document is None:
            raise Problem(404, "not-found", "no document of yours has this DocumentId")
        deliveries, events = await timeline(session, document.id)
    last = {e.recipient: e for e in events if e.kind == "status"}
    return Envelope(
        **OK,
        data=[
            {
                "serviceType": "eDoc",
                "messageType": "edoc",
                "senderDocId": document.document_id,
                "receiverDocId": "",
                "fromCode": document.sender,
                "toCode": d.recipient,
                "title": document.subject or "",
                "notation": document.code_notation or "",
                "sentTime": _time(document.submitted_at),
                "receivedTime": _time(d.arrived_at),
                "sendStatus": d.transport_state,
                "sendStatusDesc": "",
                "receiveStatus": d.status_code or "",
                "receiveStatusDesc": (last[d.recipient].description or "")
                if d.recipient in last
                else "",
            }
            for d in deliveries
        ],
    )


# --- receiving ----------------------------------------------------------------------------


@router.post("/getReceivedEdocList", response_model_exclude_none=True)
async def received_edoc_list(call: Signed) -> Envelope:
    """What waits for the credential's agencies (``messagetype``: edoc or status), oldest
    first: ``docId`` is what ``getEdoc`` and ``updateStatus`` take."""
    waiting = await call.adapter.mailbox.waiting(
        call.credential.agencies, kind=call.kind(), limit=500
    )
    return Envelope(
        **OK,
        data=[
            {
                "docId": str(m.id),
                "serviceType": "eDoc",
                "messageType": m.kind,
                "from": m.sender or "",
                "to": m.recipient,
                "status": "processing" if m.locked_until else "initial",
                "status_desc": m.status_code or "",
                "created_time": _time(m.received_at),
                "updated_time": _time(m.locked_until or m.received_at),
                "contentSha256": m.content_sha256,
                "contentLength": m.size,
            }
            for m in waiting
        ],
    )


@router.post("/getEdoc", response_model_exclude_none=True)
async def get_edoc(call: Signed) -> Envelope:
    """A received package as its sender signed it, in base64 (``data``)."""
    body = await call.adapter.mailbox.body(call.credential.agencies, call.message())
    if body is None:
        raise Problem(404, "not-found", "no message of yours has this docId", path="docId")
    return Envelope(**OK, data=base64.b64encode(body).decode())


@router.get(
    "/downloadEdoc",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
async def download_edoc(call: Signed) -> Response:
    """A received package, its bytes as the body."""
    body = await call.adapter.mailbox.body(call.credential.agencies, call.message())
    if body is None:
        raise Problem(404, "not-found", "no message of yours has this docId", path="docId")
    return Response(body, media_type="application/xml")


@router.post("/updateStatus", response_model_exclude_none=True)
async def update_status(call: Signed) -> Envelope:
    """The transport acknowledgement of a received message: ``done`` or ``fail`` take it
    out of the list, as ``/v1``'s ack does (with its 01 or 02 when the adapter holds the
    key); ``processing`` changes nothing."""
    result = (call.field("status") or "").lower()
    if result not in RESULTS:
        raise Problem(
            400,
            "status-invalid",
            "status is processing, done or fail",
            path="status",
            value=printable(result, 20),
        )
    message = call.message()
    if result == "processing":
        found = await call.adapter.mailbox.get(call.credential.agencies, message)
    else:
        reason = call.field("status_desc", "description") or None
        outcome: Result = "done" if result == "done" else "fail"
        found = await acknowledge(call.adapter, call.credential, message, outcome, reason)
    if found is None:
        raise Problem(404, "not-found", "no message of yours has this docId", path="docId")
    return Envelope(**OK)


@router.post("/countReceiveEdoc", response_model_exclude_none=True)
async def count_receive_edoc(call: Signed) -> Envelope:
    """How many documents wait."""
    return Envelope(**OK, count=await call.adapter.mailbox.count(call.credential.agencies, "edoc"))


@router.post("/countReceiveStatus", response_model_exclude_none=True)
async def count_receive_status(call: Signed) -> Envelope:
    """How many statuses wait."""
    return Envelope(
        **OK, count=await call.adapter.mailbox.count(call.credential.agencies, "status")
    )


# --- the directory ------------------------------------------------------------------------


@router.post("/getAgenciesList", response_model_exclude_none=True)
async def agencies_list(call: Signed) -> Envelope:
    """Every registered agency."""
    async with call.adapter.store.sessions() as session:
        agencies = await list_agencies(session)
    return Envelope(
        **OK,
        data=[_unit(a) | {"oldCode": ""} for a in agencies],
    )


@router.post("/getSynchronizeUnit", response_model_exclude_none=True)
async def synchronize_unit(call: Signed) -> Envelope:
    """The agencies changed since ``version`` (0 or none: all), removed ones with
    ``deleted``, each with its hub (``centerCode``: the gateway that serves it)."""
    since = call.field("version") or "0"
    if not (since.isascii() and since.isdigit()) or int(since) > MOST_ID:
        raise Problem(400, "version-invalid", "version is a number", path="version")
    async with call.adapter.store.sessions() as session:
        changes = await directory_changes(session, int(since), 5000)
    served = await hubs(call.adapter.registry) if changes else {}
    return Envelope(
        **OK,
        data=[
            _unit(a)
            | {
                "centerCode": served.get(a.code, ""),
                "modifyDate": _time(a.updated_at),
                "version": a.version,
                "deleted": not a.active,
                "isAgency": True,
            }
            for a in changes
        ],
    )


@router.post("/registerAgency", response_model_exclude_none=True)
@router.post("/deleteAgency", response_model_exclude_none=True)
async def directory_write(_: Signed) -> Envelope:
    """Refused: the directory is kept by the backbone's operators (``backbone agency``)."""
    raise Problem(
        403,
        "directory-read-only",
        "the backbone's operators keep the directory (backbone agency add|remove)",
    )


def _unit(agency: Agency) -> dict[str, Any]:
    """What the SDK reads of every unit (``id`` is the code: the registry has no other)."""
    return {
        "id": agency.code,
        "code": agency.code,
        "name": agency.name,
        "pid": agency.parent_code or "",
        "mail": "",
    }


def _time(moment: datetime | None) -> str:
    return "" if moment is None else (aware(moment) or moment).isoformat()
