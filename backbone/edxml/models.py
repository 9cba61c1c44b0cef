"""Pydantic models of edXML document and status packages.

The models mirror the wire format: leaf values are the strings the package carries
(stripped, empty meaning absent), so a package with a bad identifier or date still
parses into a model and :func:`backbone.edxml.check` can name every fault at once.
Field aliases are the XML element names; the reader and writer are driven by them,
plus two markers: :class:`Wrapped` for lists under a wrapper element
(``Appendixes/Appendix``) and :class:`AtLeast` for repeated elements with a minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal

NAMESPACE = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"


@dataclass(frozen=True, slots=True)
class Wrapped:
    """The list sits under a wrapper element named by the field alias, one ``item`` each."""

    item: str


@dataclass(frozen=True, slots=True)
class AtLeast:
    """A repeated element that must occur at least ``count`` times."""

    count: int


class Record(BaseModel):
    """An element whose children are named values (any order, each at most once)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_pascal,
        validate_by_name=True,
        validate_by_alias=True,
    )


class Organization(Record):
    """``From`` and each ``To``: the agency and how to reach it. The schema requires
    OrganId: an empty one is refused as missing (a model without it would be written
    back as a package the schema refuses)."""

    organ_id: str
    organization_in_charge: str | None = None
    organ_name: str | None = None
    organ_add: str | None = None
    email: str | None = None
    telephone: str | None = None
    fax: str | None = None
    website: str | None = None


class DocumentCode(Record):
    """``Code``: the document's number and notation (số, ký hiệu)."""

    code_number: str
    code_notation: str | None = None


class PromulgationInfo(Record):
    place: str | None = None
    promulgation_date: str


class DocumentType(Record):
    type: str
    type_detail: str | None = None
    type_name: str | None = None


class SignerInfo(Record):
    competence: str | None = None
    position: str | None = None
    full_name: str | None = None


class OtherInfo(Record):
    priority: str | None = None
    sphere_of_promulgation: str | None = None
    typer_notation: str | None = None
    promulgation_amount: str | None = None
    page_amount: str | None = None
    direction: str | None = None
    appendixes: Annotated[tuple[str, ...], Wrapped("Appendix")] = ()


class ResponseFor(Record):
    """The document answered (in a document) or reported on (in a status package)."""

    organ_id: str | None = None
    code: str | None = None
    promulgation_date: str | None = None
    document_id: str | None = None


class StaffInfo(Record):
    department: str | None = None
    staff: str | None = None
    email: str | None = None
    mobile: str | None = None


class TraceHeader(Record):
    organ_id: str | None = None
    timestamp: str


class Receiver(Record):
    receiver_type: str
    organ_id: str


class BussinessDocumentInfo(Record):
    document_info: str | None = None
    document_receiver: str | None = None
    receiver_list: Annotated[tuple[Receiver, ...], Wrapped("Receiver")] = ()


class ReplacementInfo(Record):
    document_id: str
    organ_id_list: Annotated[tuple[str, ...], Wrapped("OrganId")] = ()


class Bussiness(Record):
    """What the package does to the document: new, recall, update or replace."""

    bussiness_doc_type: str
    bussiness_doc_reason: str | None = None
    document_id: str | None = None
    paper: str | None = None
    staff_info: StaffInfo | None = None
    bussiness_document_info: BussinessDocumentInfo | None = None
    replacement_info_list: Annotated[tuple[ReplacementInfo, ...], Wrapped("ReplacementInfo")] = ()


class TraceHeaderList(Record):
    trace_headers: Annotated[tuple[TraceHeader, ...], Field(alias="TraceHeader")] = ()
    bussiness: Bussiness | None = None


class DocumentHeader(Record):
    """``MessageHeader`` of a document package."""

    from_: Annotated[Organization, Field(alias="From")]
    to: Annotated[tuple[Organization, ...], AtLeast(1)]
    document_id: str
    code: Annotated[DocumentCode, Field(alias="Code")]
    promulgation_info: PromulgationInfo
    document_type: DocumentType
    subject: str
    content: str | None = None
    signer_info: SignerInfo | None = None
    due_date: str | None = None
    other_info: OtherInfo | None = None
    steering_type: str | None = None
    to_places: Annotated[tuple[str, ...], Wrapped("Place")] = ()
    response_for: tuple[ResponseFor, ...] = ()


class StatusHeader(Record):
    """``MessageHeader`` of a status package: who reports what about which document."""

    from_: Annotated[Organization, Field(alias="From")]
    response_for: ResponseFor
    staff_info: StaffInfo | None = None
    status_code: str
    description: str | None = None
    timestamp: str


class Reference(Record):
    """A manifest entry: names one attachment by its ``ContentId``."""

    content_id: str
    content_type: str | None = None
    description: str | None = None
    attachment_name: str


class Attachment(Record):
    """An attached file, decoded from ``ContentTransferEncoded`` (base64)."""

    content_id: str
    attachment_name: str
    description: str | None = None
    content_type: str | None = None
    data: Annotated[bytes, Field(alias="ContentTransferEncoded", repr=False)]


class DocumentPackage(BaseModel):
    """An edXML document package: header, trace, manifest and attachments."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = "edoc"

    header: DocumentHeader
    trace: TraceHeaderList | None = None
    manifest_version: str = "1.0"
    references: tuple[Reference, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    @property
    def sender(self) -> str | None:
        return self.header.from_.organ_id

    @property
    def recipients(self) -> tuple[str | None, ...]:
        return tuple(to.organ_id for to in self.header.to)

    @property
    def document_id(self) -> str:
        return self.header.document_id


class StatusPackage(BaseModel):
    """An edXML status package: one recipient's status about one document."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ClassVar[str] = "status"

    header: StatusHeader
    trace: TraceHeaderList | None = None

    @property
    def sender(self) -> str | None:
        return self.header.from_.organ_id

    @property
    def document_id(self) -> str | None:
        return self.header.response_for.document_id


Package = DocumentPackage | StatusPackage
