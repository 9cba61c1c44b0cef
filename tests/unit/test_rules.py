"""Semantic rules: each element that carries an identifier, date or code is checked and named."""

from __future__ import annotations

from typing import Any

import pytest

from backbone import edxml
from backbone.edxml.models import (
    Bussiness,
    BussinessDocumentInfo,
    Receiver,
    ReplacementInfo,
    TraceHeader,
    TraceHeaderList,
)
from backbone.edxml.paths import MESSAGE_HEADER, TRACE
from backbone.errors import ErrorCode, InvalidPackage

from ..conftest import NOW, make_document, make_status

BAD_IDS = ["28.22.H17", "vxp.saas.03", "null", "000.00.00.h41"]


def test_the_paths_errors_name() -> None:
    """Paths are part of the contract: gateways read them in refusals."""
    assert edxml.paths.MESSAGE_HEADER == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
    assert edxml.paths.SENDER == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/From/OrganId"
    assert edxml.paths.RECIPIENT == "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To/OrganId"
    assert edxml.paths.TRACE == "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList"
    assert edxml.paths.SIGNATURE == "/edXML/edXMLEnvelope/edXMLHeader/Signature"
    assert edxml.paths.MANIFEST == "/edXML/edXMLEnvelope/edXMLBody/edXMLManifest"
    assert edxml.paths.ATTACHMENTS == "/edXML/AttachmentEncoded"


def _with_header(package: Any, **changes: Any) -> Any:
    return package.model_copy(update={"header": package.header.model_copy(update=changes)})


def _issues(package: edxml.Package) -> set[tuple[str, str, str | None]]:
    """Check the package after a trip through bytes, as a validator would see it."""
    with pytest.raises(InvalidPackage) as caught:
        edxml.load(edxml.build(package, validate=False))
    return {(i.code, i.path, i.value) for i in caught.value.issues}


def _trace(**bussiness: Any) -> TraceHeaderList:
    return TraceHeaderList(
        trace_headers=(TraceHeader(organ_id="000.00.00.G22", timestamp="2026/11/23 09:30:00"),),
        bussiness=Bussiness(bussiness_doc_type="2", **bussiness),
    )


def test_a_valid_document_and_status_pass() -> None:
    document, status = make_document(), make_status()
    assert edxml.load(edxml.build(document)) == document
    assert edxml.load(edxml.build(status)) == status


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_identifier_in_from(bad: str) -> None:
    package = make_document()
    package = _with_header(package, from_=package.header.from_.model_copy(update={"organ_id": bad}))
    assert (ErrorCode.BAD_AGENCY, f"{MESSAGE_HEADER}/From/OrganId", bad) in _issues(package)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_identifier_in_the_second_to(bad: str) -> None:
    package = make_document(recipients=["000.00.00.H41", bad])
    assert _issues(package) == {(ErrorCode.BAD_AGENCY, f"{MESSAGE_HEADER}/To[2]/OrganId", bad)}


def test_bad_identifier_in_response_for() -> None:
    package = make_document()
    response = edxml.ResponseFor(organ_id="28.22.H17", document_id="abc")
    assert _issues(_with_header(package, response_for=(response,))) == {
        (ErrorCode.BAD_AGENCY, f"{MESSAGE_HEADER}/ResponseFor/OrganId", "28.22.H17")
    }


def test_bad_identifier_in_trace_header() -> None:
    package = make_document().model_copy(
        update={
            "trace": TraceHeaderList(
                trace_headers=(
                    TraceHeader(organ_id="000.00.00.G22", timestamp="2026/11/23 09:30:00"),
                    TraceHeader(organ_id="null", timestamp="2026/11/23 09:30:01"),
                )
            )
        }
    )
    assert _issues(package) == {(ErrorCode.BAD_AGENCY, f"{TRACE}/TraceHeader[2]/OrganId", "null")}


def test_bad_identifier_in_bussiness_receivers_and_replacements() -> None:
    trace = _trace(
        bussiness_document_info=BussinessDocumentInfo(
            receiver_list=(Receiver(receiver_type="1", organ_id="vxp.saas.03"),)
        ),
        replacement_info_list=(
            ReplacementInfo(document_id="d1", organ_id_list=("000.00.00.H41", "H41")),
        ),
    )
    found = _issues(make_document().model_copy(update={"trace": trace}))
    assert found == {
        (
            ErrorCode.BAD_AGENCY,
            f"{TRACE}/Bussiness/BussinessDocumentInfo/ReceiverList/Receiver/OrganId",
            "vxp.saas.03",
        ),
        (
            ErrorCode.BAD_AGENCY,
            f"{TRACE}/Bussiness/ReplacementInfoList/ReplacementInfo/OrganIdList/OrganId[2]",
            "H41",
        ),
    }


@pytest.mark.parametrize("field", ["from_", "response_for"])
def test_bad_identifier_in_a_status(field: str) -> None:
    status = make_status()
    element = {"from_": "From", "response_for": "ResponseFor"}[field]
    changed = getattr(status.header, field).model_copy(update={"organ_id": "28.22.H17"})
    assert _issues(_with_header(status, **{field: changed})) == {
        (ErrorCode.BAD_AGENCY, f"{MESSAGE_HEADER}/{element}/OrganId", "28.22.H17")
    }


def test_status_needs_the_document_it_reports_on() -> None:
    status = make_status()
    response = status.header.response_for.model_copy(update={"document_id": None})
    assert (ErrorCode.MISSING, f"{MESSAGE_HEADER}/ResponseFor/DocumentId", None) in _issues(
        _with_header(status, response_for=response)
    )


@pytest.mark.parametrize(
    "bad", ["2026-11-23", "23/11/2026", "2026/13/01", "2026/02/30", "yesterday"]
)
def test_bad_dates(bad: str) -> None:
    package = make_document()
    info = package.header.promulgation_info.model_copy(update={"promulgation_date": bad})
    assert _issues(_with_header(package, promulgation_info=info, due_date=bad)) == {
        (ErrorCode.BAD_DATE, f"{MESSAGE_HEADER}/PromulgationInfo/PromulgationDate", bad),
        (ErrorCode.BAD_DATE, f"{MESSAGE_HEADER}/DueDate", bad),
    }


@pytest.mark.parametrize("bad", ["2026/11/23", "2026/11/23 25:00:00", "2026-11-23T09:30:00"])
def test_bad_timestamps(bad: str) -> None:
    assert _issues(_with_header(make_status(), timestamp=bad)) == {
        (ErrorCode.BAD_TIMESTAMP, f"{MESSAGE_HEADER}/Timestamp", bad)
    }


@pytest.mark.parametrize("code", sorted(edxml.STATUS_CODES))
def test_every_known_status_code_passes(code: str) -> None:
    edxml.load(edxml.build(make_status(code)))


@pytest.mark.parametrize("bad", ["00", "1", "07", "14", "99", "abc"])
def test_unknown_status_codes(bad: str) -> None:
    assert _issues(_with_header(make_status(), status_code=bad)) == {
        (ErrorCode.BAD_STATUS, f"{MESSAGE_HEADER}/StatusCode", bad)
    }


@pytest.mark.parametrize("priority", ["0", "1", "2", "3", "4"])
def test_known_priorities_pass(priority: str) -> None:
    edxml.load(edxml.build(make_document(priority=int(priority))))


def test_unknown_codes_are_named() -> None:
    package = make_document()
    other = package.header.other_info
    assert other is not None
    package = _with_header(
        package, other_info=other.model_copy(update={"priority": "5"}), steering_type="9"
    )
    package = package.model_copy(
        update={
            "trace": _trace(paper="2").model_copy(
                update={
                    "bussiness": _trace().bussiness.model_copy(  # type: ignore[union-attr]
                        update={"bussiness_doc_type": "7", "paper": "2"}
                    )
                }
            )
        }
    )
    assert _issues(package) == {
        (ErrorCode.BAD_CODE, f"{MESSAGE_HEADER}/OtherInfo/Priority", "5"),
        (ErrorCode.BAD_CODE, f"{MESSAGE_HEADER}/SteeringType", "9"),
        (ErrorCode.BAD_CODE, f"{TRACE}/Bussiness/BussinessDocType", "7"),
        (ErrorCode.BAD_CODE, f"{TRACE}/Bussiness/Paper", "2"),
    }


def test_duplicate_recipient_is_named() -> None:
    package = make_document(recipients=["000.00.00.H41", "000.00.00.H14", "000.00.00.H41"])
    assert _issues(package) == {
        (ErrorCode.DUPLICATE_RECIPIENT, f"{MESSAGE_HEADER}/To[3]/OrganId", "000.00.00.H41")
    }


def test_every_fault_is_reported_at_once() -> None:
    package = make_document(recipients=["bad-1", "bad-2"], now=NOW)
    found = _issues(_with_header(package, due_date="soon"))
    assert {path for _, path, _ in found} >= {
        f"{MESSAGE_HEADER}/To[1]/OrganId",
        f"{MESSAGE_HEADER}/To[2]/OrganId",
        f"{MESSAGE_HEADER}/DueDate",
    }


def test_build_refuses_to_write_an_invalid_package() -> None:
    with pytest.raises(InvalidPackage):
        edxml.build(make_document(recipients=["nobody"]))
