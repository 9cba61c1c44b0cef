"""Semantic rules: what a well-structured package must also satisfy to be accepted.

All rules run and every fault is reported at once, each with the element path and the
offending value, so a sender fixes a package in one round trip.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from ..agency import AgencyCode, AgencyCodeError
from ..errors import ErrorCode, InvalidPackage, Issue
from .models import (
    DocumentPackage,
    Organization,
    Package,
    ResponseFor,
    StatusPackage,
    TraceHeaderList,
)
from .paths import ATTACHMENTS, DOCUMENT_ID, MANIFEST, MESSAGE_HEADER, TRACE

DATE_FORMAT = "%Y/%m/%d"
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"
FIRST_YEAR = 1945
"""No date in a package is earlier: the state, and its documents, begin in 1945."""
YEARS_AHEAD = 10
"""No date in a package is later than this many years after the current one."""
STATUS_CODES = {
    "01": "arrived",
    "02": "refused",
    "03": "accepted",
    "04": "assigned",
    "05": "in progress",
    "06": "done",
    "13": "recall requested",
    "15": "recall or update agreed",
    "16": "recall or update refused",
}
PRIORITIES = {"0", "1", "2", "3", "4"}
BUSSINESS_DOC_TYPES = {"0", "1", "2", "3"}
STEERING_TYPES = {"1", "2", "3"}
FLAGS = {"0", "1"}
_MAX_DOCUMENT_ID = 255


def check(package: Package) -> Package:
    """Return ``package`` unchanged if it satisfies every rule; else raise InvalidPackage."""
    issues = list(
        _document_issues(package)
        if isinstance(package, DocumentPackage)
        else _status_issues(package)
    )
    if issues:
        raise InvalidPackage(issues)
    return package


def _indexed(path: str, tag: str, index: int, count: int) -> str:
    return f"{path}/{tag}[{index + 1}]" if count > 1 else f"{path}/{tag}"


def _agency(path: str, value: str | None, required: bool = True) -> Iterator[Issue]:
    if value is None:
        if required:
            yield Issue.of(ErrorCode.MISSING, path, "an agency identifier is required here")
        return
    try:
        AgencyCode.parse(value)
    except AgencyCodeError as exc:
        yield Issue.of(ErrorCode.BAD_AGENCY, path, f"not an agency identifier: {exc.reason}", value)


def _date(path: str, value: str | None, fmt: str = DATE_FORMAT) -> Iterator[Issue]:
    """A date (or timestamp) in ``fmt``, in ASCII digits, in the years
    :data:`FIRST_YEAR` to this year plus :data:`YEARS_AHEAD`.

    strptime alone takes full-width digits and any year up to 9999, and the deadlines
    computed from a PromulgationDate of 9999/12/31 overflow; no document of this
    exchange was promulgated before the state's founding or is due decades ahead.
    """
    if value is None:
        return
    try:
        if not value.isascii():
            raise ValueError("not ASCII")
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        if fmt == DATE_FORMAT:
            yield Issue.of(ErrorCode.BAD_DATE, path, "expected a date as yyyy/MM/dd", value)
        else:
            yield Issue.of(
                ErrorCode.BAD_TIMESTAMP, path, "expected a time as yyyy/MM/dd HH:mm:ss", value
            )
        return
    last = datetime.now(UTC).year + YEARS_AHEAD
    if not FIRST_YEAR <= parsed.year <= last:
        code = ErrorCode.BAD_DATE if fmt == DATE_FORMAT else ErrorCode.BAD_TIMESTAMP
        yield Issue.of(
            code,
            path,
            f"the year {parsed.year} is implausible: expected {FIRST_YEAR} to {last}",
            value,
        )


def _code(path: str, value: str | None, allowed: set[str], what: str) -> Iterator[Issue]:
    if value is not None and value not in allowed:
        yield Issue.of(
            ErrorCode.BAD_CODE, path, f"{what} must be one of {', '.join(sorted(allowed))}", value
        )


def _document_id(path: str, value: str | None) -> Iterator[Issue]:
    if value is None:
        return
    if len(value) > _MAX_DOCUMENT_ID or any(ord(c) < 32 for c in value):
        yield Issue.of(
            ErrorCode.BAD_DOCUMENT_ID,
            path,
            f"a DocumentId is at most {_MAX_DOCUMENT_ID} printable characters",
            value,
        )


def _organization(path: str, organization: Organization) -> Iterator[Issue]:
    yield from _agency(f"{path}/OrganId", organization.organ_id)


def _response_for(path: str, response: ResponseFor, status: bool) -> Iterator[Issue]:
    yield from _agency(f"{path}/OrganId", response.organ_id, required=status)
    yield from _date(f"{path}/PromulgationDate", response.promulgation_date)
    if response.document_id is None:
        yield Issue.of(
            ErrorCode.MISSING,
            f"{path}/DocumentId",
            "the DocumentId of the document referred to is required",
        )
    yield from _document_id(f"{path}/DocumentId", response.document_id)


def _trace(trace: TraceHeaderList | None) -> Iterator[Issue]:
    if trace is None:
        return
    count = len(trace.trace_headers)
    for i, header in enumerate(trace.trace_headers):
        path = _indexed(TRACE, "TraceHeader", i, count)
        yield from _agency(f"{path}/OrganId", header.organ_id)
        yield from _date(f"{path}/Timestamp", header.timestamp, TIMESTAMP_FORMAT)
    business = trace.bussiness
    if business is None:
        return
    path = f"{TRACE}/Bussiness"
    yield from _code(
        f"{path}/BussinessDocType",
        business.bussiness_doc_type,
        BUSSINESS_DOC_TYPES,
        "BussinessDocType",
    )
    yield from _code(f"{path}/Paper", business.paper, FLAGS, "Paper")
    yield from _document_id(f"{path}/DocumentId", business.document_id)
    info = business.bussiness_document_info
    if info is not None:
        count = len(info.receiver_list)
        for i, receiver in enumerate(info.receiver_list):
            receiver_path = _indexed(
                f"{path}/BussinessDocumentInfo/ReceiverList", "Receiver", i, count
            )
            yield from _code(
                f"{receiver_path}/ReceiverType", receiver.receiver_type, FLAGS, "ReceiverType"
            )
            yield from _agency(f"{receiver_path}/OrganId", receiver.organ_id)
    count = len(business.replacement_info_list)
    for i, replacement in enumerate(business.replacement_info_list):
        replacement_path = _indexed(f"{path}/ReplacementInfoList", "ReplacementInfo", i, count)
        yield from _document_id(f"{replacement_path}/DocumentId", replacement.document_id)
        ids = len(replacement.organ_id_list)
        for j, organ_id in enumerate(replacement.organ_id_list):
            yield from _agency(
                _indexed(f"{replacement_path}/OrganIdList", "OrganId", j, ids), organ_id
            )


def _document_issues(package: DocumentPackage) -> Iterator[Issue]:
    header = package.header
    yield from _organization(f"{MESSAGE_HEADER}/From", header.from_)
    count = len(header.to)
    seen: set[str] = set()
    for i, recipient in enumerate(header.to):
        path = _indexed(MESSAGE_HEADER, "To", i, count)
        yield from _organization(path, recipient)
        if recipient.organ_id is not None:
            if recipient.organ_id in seen:
                yield Issue.of(
                    ErrorCode.DUPLICATE_RECIPIENT,
                    f"{path}/OrganId",
                    "this recipient is already listed",
                    recipient.organ_id,
                )
            seen.add(recipient.organ_id)
    yield from _document_id(DOCUMENT_ID, header.document_id)
    yield from _date(
        f"{MESSAGE_HEADER}/PromulgationInfo/PromulgationDate",
        header.promulgation_info.promulgation_date,
    )
    yield from _date(f"{MESSAGE_HEADER}/DueDate", header.due_date)
    yield from _code(
        f"{MESSAGE_HEADER}/SteeringType", header.steering_type, STEERING_TYPES, "SteeringType"
    )
    if header.other_info is not None:
        yield from _code(
            f"{MESSAGE_HEADER}/OtherInfo/Priority",
            header.other_info.priority,
            PRIORITIES,
            "Priority",
        )
    count = len(header.response_for)
    for i, response in enumerate(header.response_for):
        yield from _response_for(
            _indexed(MESSAGE_HEADER, "ResponseFor", i, count), response, status=False
        )
    yield from _trace(package.trace)
    yield from _manifest(package)


def _manifest(package: DocumentPackage) -> Iterator[Issue]:
    references = Counter(r.content_id for r in package.references)
    attachments = Counter(a.content_id for a in package.attachments)
    count = len(package.references)
    for i, reference in enumerate(package.references):
        path = _indexed(MANIFEST, "Reference", i, count) + "/ContentId"
        cid = reference.content_id
        if references[cid] > 1:
            yield Issue.of(
                ErrorCode.DUPLICATE_CONTENT_ID,
                path,
                "two manifest references share this ContentId",
                cid,
            )
        if attachments[cid] == 0:
            yield Issue.of(
                ErrorCode.MANIFEST_MISMATCH, path, "no Attachment has this ContentId", cid
            )
        elif attachments[cid] > 1:
            yield Issue.of(
                ErrorCode.MANIFEST_MISMATCH,
                path,
                f"{attachments[cid]} Attachments have this ContentId, expected one",
                cid,
            )
    count = len(package.attachments)
    for i, attachment in enumerate(package.attachments):
        if references[attachment.content_id] == 0:
            path = _indexed(ATTACHMENTS, "Attachment", i, count) + "/ContentId"
            yield Issue.of(
                ErrorCode.MANIFEST_MISMATCH,
                path,
                "no manifest Reference has this ContentId",
                attachment.content_id,
            )


def _status_issues(package: StatusPackage) -> Iterator[Issue]:
    header = package.header
    yield from _organization(f"{MESSAGE_HEADER}/From", header.from_)
    yield from _response_for(f"{MESSAGE_HEADER}/ResponseFor", header.response_for, status=True)
    if header.status_code not in STATUS_CODES:
        yield Issue.of(
            ErrorCode.BAD_STATUS,
            f"{MESSAGE_HEADER}/StatusCode",
            f"unknown status code; known: {', '.join(STATUS_CODES)}",
            header.status_code,
        )
    yield from _date(f"{MESSAGE_HEADER}/Timestamp", header.timestamp, TIMESTAMP_FORMAT)
    yield from _trace(package.trace)
