"""Reading and writing: any child order, empty optional elements, round trips."""

from __future__ import annotations

import random

import pytest
from lxml import etree

from backbone import edxml
from backbone.edxml.factory import File, document_id_for
from backbone.edxml.models import (
    Bussiness,
    BussinessDocumentInfo,
    Organization,
    OtherInfo,
    Receiver,
    ReplacementInfo,
    SignerInfo,
    StaffInfo,
    TraceHeader,
    TraceHeaderList,
)

from ..conftest import NOW, make_document, make_status

NS = edxml.NAMESPACE


def full_document() -> edxml.DocumentPackage:
    """A document with every optional part filled, so that reading and writing see it all."""
    package = make_document(
        sender=Organization(
            organ_id="000.00.00.G22",
            organization_in_charge="Văn phòng Chính phủ",
            organ_name="VPCP",
            organ_add="Số 1 Hoàng Hoa Thám",
            email="a@gov.vn",
            telephone="8043100",
            fax="04",
            website="vpcp.vn",
        ),
        recipients=["000.00.00.H41", "000.03.15.H41", "002.00.20.H13"],
        files=[
            File("a.pdf", b"%PDF-1.7 a", "application/pdf"),
            File("b.doc", b"", "application/msword"),
        ],
        content="Tóm tắt",
        priority=2,
    )
    header = package.header.model_copy(
        update={
            "signer_info": SignerInfo(
                competence="KT. BỘ TRƯỞNG", position="Thứ trưởng", full_name="A"
            ),
            "due_date": "2026/12/01",
            "other_info": OtherInfo(
                priority="2",
                sphere_of_promulgation="Liên thông",
                typer_notation="TVC",
                promulgation_amount="2",
                page_amount="22",
                direction="false",
                appendixes=("Phụ lục I", "Phụ lục II"),
            ),
            "to_places": ("Các bộ", "UBND các tỉnh"),
            "response_for": (
                edxml.ResponseFor(
                    organ_id="000.00.00.H14",
                    code="267/VPCP",
                    promulgation_date="2026/01/02",
                    document_id="x,y,z",
                ),
            ),
        }
    )
    trace = TraceHeaderList(
        trace_headers=(
            TraceHeader(organ_id="000.00.00.G22", timestamp="2026/11/23 09:30:00"),
            TraceHeader(organ_id="000.00.00.H41", timestamp="2026/11/23 09:30:05"),
        ),
        bussiness=Bussiness(
            bussiness_doc_type="3",
            bussiness_doc_reason="Thay thế",
            document_id="old-id",
            paper="1",
            staff_info=StaffInfo(department="Văn thư", staff="B", email="b@gov.vn", mobile="849"),
            bussiness_document_info=BussinessDocumentInfo(
                document_info="1",
                document_receiver="1",
                receiver_list=(
                    Receiver(receiver_type="1", organ_id="000.00.00.H14"),
                    Receiver(receiver_type="0", organ_id="000.00.00.H41"),
                ),
            ),
            replacement_info_list=(
                ReplacementInfo(
                    document_id="old-id", organ_id_list=("000.00.00.H41", "000.00.00.H14")
                ),
            ),
        ),
    )
    return package.model_copy(update={"header": header, "trace": trace})


@pytest.mark.parametrize(
    "make", [make_document, full_document, make_status], ids=lambda f: f.__name__
)
def test_build_then_parse_round_trips(make: object) -> None:
    package = make()  # type: ignore[operator]
    data = edxml.build(package)
    assert edxml.load(data) == package
    assert edxml.build(edxml.load(data)) == data


def test_children_in_any_order_read_the_same() -> None:
    """Real SDKs disagree on the order of MessageHeader, From, OtherInfo... children."""
    package = full_document()
    root = etree.fromstring(edxml.build(package))
    rng = random.Random(7)
    for element in root.iter(
        f"{{{NS}}}MessageHeader",
        f"{{{NS}}}From",
        f"{{{NS}}}To",
        f"{{{NS}}}OtherInfo",
        f"{{{NS}}}TraceHeaderList",
        f"{{{NS}}}Bussiness",
    ):
        # a new order of element names; repeated elements (To, TraceHeader) keep theirs
        rank = {tag: rng.random() for tag in {child.tag for child in element}}
        element[:] = sorted(element, key=lambda child: rank[child.tag])
    shuffled = etree.tostring(root)
    assert shuffled != edxml.build(package)
    assert edxml.load(shuffled) == package


def test_empty_optional_elements_count_as_absent() -> None:
    data = edxml.build(make_document()).replace(
        b"<edXML:Subject>",
        b"<edXML:Content>  </edXML:Content><edXML:DueDate/><edXML:SignerInfo><edXML:FullName/>"
        b"</edXML:SignerInfo><edXML:ResponseFor><edXML:OrganId></edXML:OrganId><edXML:DocumentId/>"
        b"</edXML:ResponseFor><edXML:ToPlaces/><edXML:Subject>",
    )
    package = edxml.load(data)
    assert isinstance(package, edxml.DocumentPackage)
    header = package.header
    assert (header.content, header.due_date, header.signer_info) == (None, None, None)
    assert header.response_for == () and header.to_places == ()


def test_text_is_stripped() -> None:
    data = edxml.build(make_status()).replace(b">01<", b">\n   01\t<")
    package = edxml.load(data)
    assert isinstance(package, edxml.StatusPackage)
    assert package.header.status_code == "01"


def test_comments_and_processing_instructions_are_ignored() -> None:
    package = make_status()
    data = edxml.build(package).replace(
        b"<edXML:StatusCode>", b"<!-- note --><?pi x?><edXML:StatusCode>"
    )
    assert edxml.load(data) == package


def test_a_package_in_the_default_namespace_reads_the_same() -> None:
    package = make_status()
    data = edxml.build(package).replace(b"edXML:", b"").replace(b"xmlns:edXML=", b"xmlns=")
    assert b"edXML:" not in data
    assert edxml.load(data) == package


def test_an_unsigned_package_and_a_signature_slot() -> None:
    """A Signature (XML-DSig or the namespace-less one of old SDKs) does not stop parsing."""
    package = make_status()
    for signature in (
        b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/>'
        b"</ds:Signature>",
        b"<edXML:Signature><SignedInfo/></edXML:Signature>",
    ):
        data = edxml.build(package).replace(
            b"</edXML:edXMLHeader>", signature + b"</edXML:edXMLHeader>"
        )
        assert edxml.load(data) == package


def test_document_id_convention() -> None:
    assert document_id_for("000.00.00.G22", NOW.date(), "7816", "VPCP-TTĐT") == (
        "000.00.00.G22,2026/11/23,7816/VPCP-TTĐT"
    )
    assert make_document().document_id == "000.00.00.G22,2026/11/23,7816/VPCP-TTĐT"


def test_interop_samples_round_trip(interop_dir: object) -> None:
    from pathlib import Path

    assert isinstance(interop_dir, Path)
    for path in sorted(interop_dir.glob("*.edxml")):
        try:
            package = edxml.parse(path.read_bytes())
        except edxml.PackageError:
            continue
        assert edxml.parse(edxml.build(package, validate=False)) == package, path.name
