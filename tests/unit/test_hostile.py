"""Hostile and broken input: each is refused with our error, names the fault, and never crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from backbone import edxml
from backbone.edxml.limits import Limits
from backbone.errors import (
    ErrorCode,
    InvalidPackage,
    MalformedPackage,
    PackageError,
    UnsafePackage,
)

from ..conftest import make_document, make_status

SUBJECT = "V/v kết nối, liên thông phần mềm quản lý văn bản".encode()


def _with_doctype(document: bytes, doctype: bytes, subject: bytes) -> bytes:
    """The valid package with a DOCTYPE after the declaration and the Subject replaced."""
    declaration_end = document.index(b"?>") + 2
    body = document[declaration_end:].replace(SUBJECT, subject)
    return document[:declaration_end] + doctype + body


def test_external_entity_reading_a_local_file_is_refused(
    document_bytes: bytes, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    data = _with_doctype(
        document_bytes,
        f'<!DOCTYPE edXML:edXML [<!ENTITY x SYSTEM "file://{secret}">]>'.encode(),
        b"&x;",
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.load(data)
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN
    assert "TOP-SECRET" not in str(caught.value)


def test_billion_laughs_is_refused(document_bytes: bytes) -> None:
    entities = b'<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    data = _with_doctype(document_bytes, b"<!DOCTYPE edXML:edXML [" + entities + b"]>", b"&lol9;")
    with pytest.raises(UnsafePackage) as caught:
        edxml.load(data)
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN


def test_external_dtd_is_refused_without_fetching(document_bytes: bytes, tmp_path: Path) -> None:
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY leak "LEAKED">')
    data = _with_doctype(
        document_bytes, f'<!DOCTYPE edXML:edXML SYSTEM "file://{dtd}">'.encode(), SUBJECT
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.load(data)
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN
    network = _with_doctype(
        document_bytes, b'<!DOCTYPE edXML:edXML SYSTEM "http://127.0.0.1:9/evil.dtd">', SUBJECT
    )
    with pytest.raises(UnsafePackage):
        edxml.load(network)


def test_parameter_entities_are_refused(document_bytes: bytes, tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0")
    data = _with_doctype(
        document_bytes,
        f'<!DOCTYPE edXML:edXML [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>'.encode(),
        SUBJECT,
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.load(data)
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN
    assert "root:x" not in str(caught.value)


@pytest.mark.parametrize("padding", [0, 9 * 1024 * 1024], ids=["small", "huge-tree-mode"])
def test_ten_thousand_deep_nesting_is_refused(padding: int) -> None:
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    data = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><!--'
        + b"x" * padding
        + b"-->"
        + deep
        + b"</edXML>"
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert "deep" in caught.value.message


def test_package_over_the_size_limit_is_refused_before_parsing(document_bytes: bytes) -> None:
    limits = Limits(max_package_bytes=len(document_bytes) - 1)
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(document_bytes, limits)
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert str(len(document_bytes)) in caught.value.message
    # garbage over the limit is refused by size, not by a parse attempt
    with pytest.raises(UnsafePackage, match="over the limit"):
        edxml.parse(b"\xff" * 100, Limits(max_package_bytes=99))


def test_attachment_over_its_limit_is_refused(document_bytes: bytes) -> None:
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(document_bytes, Limits(max_attachment_bytes=1000))
    assert caught.value.code == ErrorCode.ATTACHMENT_TOO_LARGE
    assert caught.value.path.endswith("/AttachmentEncoded/Attachment/ContentTransferEncoded")


@pytest.mark.parametrize(
    "data",
    [
        "<edXML>é</edXML>".encode("latin-1"),
        '<?xml version="1.0" encoding="ISO-8859-1"?><edXML>é</edXML>'.encode("latin-1"),
        '<?xml version="1.0" encoding="UTF-16"?><edXML/>'.encode("utf-16"),
        b'<?xml version="1.0" encoding="UTF-8"?><edXML>\xc3\x28</edXML>',
    ],
    ids=["latin1-undeclared", "latin1-declared", "utf16", "broken-utf8"],
)
def test_non_utf8_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.NOT_UTF8


@pytest.mark.parametrize(
    "data",
    [
        b"<edXML/>",
        b'<edXML xmlns="urn:other"/>',
        b'<Envelope xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"/>',
    ],
    ids=["no-namespace", "other-namespace", "wrong-root"],
)
def test_wrong_root_or_namespace_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.WRONG_ROOT


@pytest.mark.parametrize(
    "data",
    [b"", b"not xml at all", b"<edXML", b"\x00\x01\x02"],
    ids=["empty", "text", "cut", "binary"],
)
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPackage):
        edxml.parse(data)


def _drop(data: bytes, element: bytes) -> bytes:
    start = data.index(b"<edXML:" + element + b">")
    end_tag = b"</edXML:" + element + b">"
    end = data.index(end_tag, start) + len(end_tag)
    return data[:start] + data[end:]


def test_missing_from_is_refused(document_bytes: bytes, status_bytes: bytes) -> None:
    for data in (document_bytes, status_bytes):
        with pytest.raises(InvalidPackage) as caught:
            edxml.parse(_drop(data, b"From"))
        assert caught.value.code == ErrorCode.MISSING
        assert caught.value.path.endswith("/MessageHeader/From")


def test_missing_to_is_refused() -> None:
    data = edxml.build(make_document(recipients=["000.00.00.H41"]))
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(_drop(data, b"To"))
    assert caught.value.code == ErrorCode.MISSING
    assert caught.value.path.endswith("/MessageHeader/To")


def test_empty_to_counts_as_missing() -> None:
    data = edxml.build(make_document(recipients=["000.00.00.H41"]))
    data = data.replace(
        b"<edXML:OrganId>000.00.00.H41</edXML:OrganId>", b"<edXML:OrganId> </edXML:OrganId>"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.MISSING


def test_unknown_status_code_is_refused() -> None:
    data = edxml.build(make_status(), validate=False).replace(
        b"<edXML:StatusCode>01<", b"<edXML:StatusCode>07<"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.load(data)
    assert caught.value.code == ErrorCode.BAD_STATUS
    assert caught.value.value == "07"
    assert caught.value.path.endswith("/MessageHeader/StatusCode")


def test_manifest_attachment_mismatch_is_refused(document: edxml.DocumentPackage) -> None:
    (reference,) = document.references
    orphan = document.model_copy(
        update={"references": (reference.model_copy(update={"content_id": "cid:other"}),)}
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.load(edxml.build(orphan, validate=False))
    found = {(i.code, i.path.rsplit("/", 2)[-2], i.value) for i in caught.value.issues}
    assert (ErrorCode.MANIFEST_MISMATCH, "Reference", "cid:other") in found
    assert (ErrorCode.MANIFEST_MISMATCH, "Attachment", reference.content_id) in found


def test_two_attachments_with_one_content_id_are_refused(document: edxml.DocumentPackage) -> None:
    twice = document.model_copy(update={"attachments": document.attachments * 2})
    with pytest.raises(InvalidPackage) as caught:
        edxml.load(edxml.build(twice, validate=False))
    assert caught.value.code == ErrorCode.MANIFEST_MISMATCH
    assert "2 Attachments" in caught.value.message


@pytest.mark.parametrize("bad", [b"!!!not base64!!!", b"QUJD=", b"QUJDRA=x", b"QUJ"])
def test_invalid_base64_is_refused(document_bytes: bytes, bad: bytes) -> None:
    start = document_bytes.index(b"<edXML:ContentTransferEncoded>") + len(
        b"<edXML:ContentTransferEncoded>"
    )
    end = document_bytes.index(b"</edXML:ContentTransferEncoded>")
    data = document_bytes[:start] + bad + document_bytes[end:]
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.BAD_BASE64
    assert caught.value.path.endswith("/Attachment/ContentTransferEncoded")


def test_base64_may_be_wrapped_in_lines(
    document: edxml.DocumentPackage, document_bytes: bytes
) -> None:
    start = document_bytes.index(b"<edXML:ContentTransferEncoded>") + len(
        b"<edXML:ContentTransferEncoded>"
    )
    end = document_bytes.index(b"</edXML:ContentTransferEncoded>")
    encoded = document_bytes[start:end]
    wrapped = b"\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    package = edxml.load(document_bytes[:start] + b"\n" + wrapped + b"\n" + document_bytes[end:])
    assert package == document


def test_unknown_element_is_a_schema_error_with_its_path(document_bytes: bytes) -> None:
    data = document_bytes.replace(
        b"<edXML:Subject>", b"<edXML:Bogus>x</edXML:Bogus><edXML:Subject>"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.SCHEMA
    assert "Bogus" in caught.value.message
    assert caught.value.path.startswith(edxml.paths.MESSAGE_HEADER)
    assert caught.value.line == 2  # the XML declaration is line 1


def test_status_element_in_a_document_is_refused(document_bytes: bytes) -> None:
    data = document_bytes.replace(
        b"<edXML:Subject>", b"<edXML:Timestamp>2026/01/01 00:00:00</edXML:Timestamp><edXML:Subject>"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.UNEXPECTED
    assert caught.value.path.endswith("/MessageHeader/Timestamp")


def test_body_in_a_status_package_is_refused(status_bytes: bytes) -> None:
    data = status_bytes.replace(
        b"</edXML:edXMLEnvelope>",
        b'<edXML:edXMLBody><edXML:edXMLManifest version="1.0"/></edXML:edXMLBody>'
        b"</edXML:edXMLEnvelope>",
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.UNEXPECTED


def test_a_repeated_single_element_is_refused(document_bytes: bytes) -> None:
    data = document_bytes.replace(
        b"<edXML:Subject>", b"<edXML:Subject>again</edXML:Subject><edXML:Subject>"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.TOO_MANY
    assert caught.value.path.endswith("/MessageHeader/Subject")


def test_long_values_are_truncated_in_errors(document: edxml.DocumentPackage) -> None:
    header = document.header.model_copy(update={"document_id": "x" * 5000})
    with pytest.raises(InvalidPackage) as caught:
        edxml.check(document.model_copy(update={"header": header}))
    assert caught.value.value is not None and len(caught.value.value) < 120


def test_every_refusal_is_a_package_error_and_nothing_else() -> None:
    for data in (b"", b"<", b"<edXML/>", b"\xff\xfe<\x00", "<edXML>\u0000</edXML>".encode()):
        with pytest.raises(PackageError):
            edxml.load(data)
    with pytest.raises(TypeError):
        edxml.parse("a str is not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prolog",
    [b"", b"\xef\xbb\xbf", b"<!-- a comment -->\n", b"<?pi x?>  \n<!-- c -->"],
    ids=["bare", "bom", "comment", "pi-and-comment"],
)
def test_a_doctype_anywhere_in_the_prolog_is_refused_before_parsing(prolog: bytes) -> None:
    data = prolog + b'<!DOCTYPE edXML [<!ENTITY a "b">]><edXML>&a;</edXML>'
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN
