"""Each real package from the national axis SDK gives the outcome shared/interop/README states."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from backbone import edxml
from backbone.errors import ErrorCode, InvalidPackage, MalformedPackage

pytestmark = pytest.mark.interop

STATUS_FILES = [
    "status_inbox_01.edxml",
    "status_rejection_02.edxml",
    "status_acceptance_03.edxml",
    "status_assignment_04.edxml",
    "status_processing_05.edxml",
    "status_finish_06.edxml",
    "status_cancellation_13.edxml",
    "status_change-acceptance_15.edxml",
    "status_change-rejection_16.edxml",
]
DOCUMENT_ID = "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"


def test_every_sample_is_covered(interop_dir: Path) -> None:
    named = {
        *STATUS_FILES,
        "edoc_revocation.edxml",
        "edoc_update.edxml",
        "edoc_replacement.edxml",
        "edoc_gateway_2025.edxml",
        "edoc.edxml",
    }
    assert {p.name for p in interop_dir.iterdir()} == named


@pytest.mark.parametrize("name", STATUS_FILES)
def test_status_samples_parse_as_status_packages(interop_dir: Path, name: str) -> None:
    data = (interop_dir / name).read_bytes()
    package = edxml.load(data)
    assert isinstance(package, edxml.StatusPackage)
    code = re.search(r"_(\d\d)\.edxml$", name)
    assert code is not None
    assert package.header.status_code == code.group(1)
    assert package.header.response_for.document_id == DOCUMENT_ID
    expected_reporter = "000.00.00.G22" if code.group(1) == "13" else "000.00.00.H41"
    assert package.header.from_.organ_id == expected_reporter
    assert b"xmldsig" not in data and b"<Signature" not in data  # they carry no signature


def test_revocation_parses_as_a_recall_to_three_recipients(interop_dir: Path) -> None:
    raw = (interop_dir / "edoc_revocation.edxml").read_bytes()
    package = edxml.load(raw)
    assert isinstance(package, edxml.DocumentPackage)
    assert package.trace is not None and package.trace.bussiness is not None
    assert package.trace.bussiness.bussiness_doc_type == "1"
    assert package.recipients == ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")
    (attachment,) = package.attachments
    encoded = re.search(rb"<edXML:ContentTransferEncoded[^>]*>([^<]+)<", raw)
    assert encoded is not None
    assert attachment.data == base64.b64decode(b"".join(encoded.group(1).split()))
    assert len(attachment.data) > 200_000
    # Its Signature has no XML-DSig namespace: refusing it as unsigned is the signing
    # layer's job; here it must simply not stop the package from parsing.


def test_update_parses_with_its_receiver_changes(interop_dir: Path) -> None:
    package = edxml.load((interop_dir / "edoc_update.edxml").read_bytes())
    assert isinstance(package, edxml.DocumentPackage)
    assert package.trace is not None and package.trace.bussiness is not None
    business = package.trace.bussiness
    assert business.bussiness_doc_type == "2"
    # an identifier, not a date to check: 2014/02/30 is kept as written
    assert business.document_id == "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT"
    info = business.bussiness_document_info
    assert info is not None
    assert (info.document_info, info.document_receiver) == ("1", "1")
    assert [(r.receiver_type, r.organ_id) for r in info.receiver_list] == [
        ("0", "000.00.00.H41"),
        ("1", "000.00.00.H14"),
    ]


def test_replacement_parses_with_its_replacement_list(interop_dir: Path) -> None:
    package = edxml.load((interop_dir / "edoc_replacement.edxml").read_bytes())
    assert isinstance(package, edxml.DocumentPackage)
    assert package.trace is not None and package.trace.bussiness is not None
    business = package.trace.bussiness
    assert business.bussiness_doc_type == "3" and business.document_id is None
    replaced = [(r.document_id, r.organ_id_list) for r in business.replacement_info_list]
    # the same entry twice: kept as two entries here; what a replace does with them is the
    # lifecycle's business, not the reader's
    assert (
        replaced
        == [("000.00.00.G22,2014/01/30,7806/VPCP-TTĐT", ("000.00.00.H41", "000.00.00.H14"))] * 2
    )


def test_gateway_2025_is_refused_naming_from_and_to(interop_dir: Path) -> None:
    package = edxml.parse((interop_dir / "edoc_gateway_2025.edxml").read_bytes())
    with pytest.raises(InvalidPackage) as caught:
        edxml.check(package)
    bad = {
        (i.path.rsplit("MessageHeader/", 1)[-1], i.value)
        for i in caught.value.issues
        if i.code == ErrorCode.BAD_AGENCY
    }
    assert ("From/OrganId", "vxp.saas.03") in bad
    assert ("To/OrganId", "vxp.saas.03") in bad


def test_edoc_with_undeclared_prefix_is_malformed_with_position(interop_dir: Path) -> None:
    with pytest.raises(MalformedPackage) as caught:
        edxml.parse((interop_dir / "edoc.edxml").read_bytes())
    error = caught.value
    assert error.code == ErrorCode.MALFORMED
    assert "xlink" in error.message
    assert error.issues[0].line == 116 and error.issues[0].column == 39
