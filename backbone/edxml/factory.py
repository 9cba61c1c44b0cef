"""Building new packages from a few facts, with the conventions real systems follow.

Used by ``backbone send``, the demo, the benchmark and the tests, so that a package the
backbone writes is one it would itself accept.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from .models import (
    Attachment,
    Bussiness,
    DocumentCode,
    DocumentHeader,
    DocumentPackage,
    DocumentType,
    Organization,
    OtherInfo,
    PromulgationInfo,
    Reference,
    ResponseFor,
    StaffInfo,
    StatusHeader,
    StatusPackage,
    TraceHeader,
    TraceHeaderList,
)
from .rules import DATE_FORMAT, TIMESTAMP_FORMAT


@dataclass(frozen=True, slots=True)
class File:
    """A file to attach: its name, its bytes and (optionally) its media type."""

    name: str
    data: bytes
    content_type: str = "application/octet-stream"


def _organization(agency: str | Organization) -> Organization:
    return agency if isinstance(agency, Organization) else Organization(organ_id=agency)


def document_id_for(sender: str, promulgated: date, number: str, notation: str | None) -> str:
    """The conventional DocumentId: ``<issuer>,<yyyy/MM/dd>,<number>/<notation>``."""
    code = f"{number}/{notation}" if notation else number
    return f"{sender},{promulgated.strftime(DATE_FORMAT)},{code}"


def new_document(
    *,
    sender: str | Organization,
    recipients: Sequence[str | Organization],
    subject: str,
    number: str,
    notation: str | None = None,
    files: Sequence[File] = (),
    promulgated: date | None = None,
    type_code: str = "1",
    type_name: str = "Công văn",
    priority: int = 0,
    content: str | None = None,
    document_id: str | None = None,
    now: datetime | None = None,
) -> DocumentPackage:
    """A new document (BussinessDocType 0) from ``sender`` to ``recipients``."""
    now = now or datetime.now()
    promulgated = promulgated or now.date()
    origin = _organization(sender)
    sender_id = origin.organ_id or ""
    attachments = tuple(
        Attachment(
            content_id=f"cid:{uuid.uuid4()}",
            attachment_name=file.name,
            content_type=file.content_type,
            data=file.data,
        )
        for file in files
    )
    return DocumentPackage(
        header=DocumentHeader(
            from_=origin,
            to=tuple(_organization(r) for r in recipients),
            document_id=document_id or document_id_for(sender_id, promulgated, number, notation),
            code=DocumentCode(code_number=number, code_notation=notation),
            promulgation_info=PromulgationInfo(promulgation_date=promulgated.strftime(DATE_FORMAT)),
            document_type=DocumentType(type=type_code, type_name=type_name),
            subject=subject,
            content=content,
            other_info=OtherInfo(priority=str(priority)),
            steering_type="1",
        ),
        trace=TraceHeaderList(
            trace_headers=(
                TraceHeader(organ_id=sender_id, timestamp=now.strftime(TIMESTAMP_FORMAT)),
            ),
            bussiness=Bussiness(bussiness_doc_type="0", paper="0"),
        ),
        references=tuple(
            Reference(
                content_id=a.content_id,
                content_type=a.content_type,
                attachment_name=a.attachment_name,
            )
            for a in attachments
        ),
        attachments=attachments,
    )


def new_status(
    *,
    reporter: str | Organization,
    document: DocumentPackage | ResponseFor,
    status_code: str,
    description: str | None = None,
    staff: StaffInfo | None = None,
    now: datetime | None = None,
) -> StatusPackage:
    """A status package from ``reporter`` about ``document`` (a package or its reference)."""
    if isinstance(document, DocumentPackage):
        header = document.header
        document = ResponseFor(
            organ_id=header.from_.organ_id,
            code=header.code.code_number
            + (f"/{header.code.code_notation}" if header.code.code_notation else ""),
            promulgation_date=header.promulgation_info.promulgation_date,
            document_id=header.document_id,
        )
    now = now or datetime.now()
    return StatusPackage(
        header=StatusHeader(
            from_=_organization(reporter),
            response_for=document,
            staff_info=staff,
            status_code=status_code,
            description=description,
            timestamp=now.strftime(TIMESTAMP_FORMAT),
        )
    )
