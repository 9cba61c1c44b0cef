"""Issue 13, the format and signature layer: each hostile input refused cheaply, by name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime

import pytest
from lxml import etree

from backbone import edxml, signing
from backbone.edxml.limits import Limits
from backbone.edxml.paths import HEADER, SIGNATURE
from backbone.errors import ErrorCode, InvalidPackage, PackageError, SignatureError, UnsafePackage

from ..conftest import Signer, make_document

DS = "{http://www.w3.org/2000/09/xmldsig#}"
ED = "{http://www.mic.gov.vn/TBT/QCVN_102_2016}"


def _unused_namespaces(data: bytes, count: int) -> bytes:
    """``count`` unused declarations on the root: no exclusive canonical form changes."""
    declarations = b"".join(b' xmlns:n%d="urn:unused:%d"' % (i, i) for i in range(count))
    at = data.index(b"<edXML:edXML") + len(b"<edXML:edXML")
    return data[:at] + declarations + data[at:]


def _signed(signers: dict[str, Signer]) -> bytes:
    return signers["G22"].sign(edxml.build(make_document()))


# --- 4: namespace declarations ---------------------------------------------------------


def test_sixty_thousand_unused_namespaces_are_refused_before_parsing(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    hostile = _unused_namespaces(_signed(signers), 60_000)
    for attempt in (lambda: edxml.load_tree(hostile), lambda: verifier.verify(hostile)):
        with pytest.raises(UnsafePackage) as caught:
            attempt()
        assert caught.value.code == ErrorCode.TOO_LARGE
        assert caught.value.path == "/edXML"
        assert caught.value.value == "edXML:edXML"
        assert caught.value.line == 2
        assert "namespace declarations" in caught.value.message


def test_a_thousand_unused_namespaces_still_verify(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    """Under the bound, unused declarations are harmless: the signature still holds."""
    signed = _signed(signers)
    verified = verifier.verify(_unused_namespaces(signed, 1_000))
    assert verified.package == verifier.verify(signed).package


def test_declarations_on_an_inner_element_name_their_tag() -> None:
    data = edxml.build(make_document()).replace(
        b"<edXML:Subject>", b'<edXML:Subject xmlns:a="urn:a" xmlns:b="urn:b" xmlns:c="urn:c">'
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data, Limits(max_namespace_declarations=3))
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert caught.value.value == "edXML:Subject"
    assert caught.value.path == ""  # not the root: the line says where
    assert caught.value.line == 2


def test_the_word_xmlns_in_content_is_not_a_declaration() -> None:
    """Only declarations count: base64 that spells ``xmlns`` thousands of times is data."""
    data = edxml.build(make_document())
    start = data.index(b"<edXML:ContentTransferEncoded>") + len(b"<edXML:ContentTransferEncoded>")
    end = data.index(b"</edXML:ContentTransferEncoded>")
    spelled = data[:start] + b"xmlns" * 2_000 + data[end:]
    package = edxml.parse(spelled, Limits(max_namespace_declarations=10))
    assert isinstance(package, edxml.DocumentPackage)
    assert len(package.attachments[0].data) == 7_500


RUN_OF_XMLNS = textwrap.dedent(
    """
    from backbone import edxml
    from backbone.errors import PackageError
    root = b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><a>'
    for text in (b"xmlns:" * 200_000, b"xmlns:a" + b" " * 1_000_000, b"xmlns " * 200_000):
        data = root + text + b"</a></edXML>"
        try:
            edxml.parse(data)
        except PackageError as exc:
            print(exc.code)
    """
)


def test_runs_of_xmlns_text_are_searched_in_linear_time() -> None:
    """1.2 MB of `xmlns:` with no '=' cost 28 s per 120 KB when the search rescanned each
    run from every occurrence; in a process of its own, so that a regression fails on the
    timeout instead of hanging the suite."""
    done = subprocess.run(
        [sys.executable, "-c", RUN_OF_XMLNS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["schema"] * 3  # parsed, then refused for its shape


# --- 5: only the signature in the Signature, only the Signature in the header ----------


def test_a_forged_message_header_in_a_ds_object_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    """Added after signing, inside the Signature the enveloped transform removes."""
    root = etree.fromstring(_signed(signers))
    message_header = root.find(f"{ED}edXMLEnvelope/{ED}edXMLHeader/{ED}MessageHeader")
    assert message_header is not None
    forged = etree.fromstring(etree.tostring(message_header))
    forged.find(f"{ED}Subject").text = "Forged subject"  # type: ignore[union-attr]
    signature = root.find(f".//{DS}Signature")
    assert signature is not None
    etree.SubElement(signature, f"{DS}Object").append(forged)
    with pytest.raises(SignatureError) as caught:
        verifier.verify(etree.tostring(root))
    assert caught.value.code == ErrorCode.MALFORMED_SIGNATURE
    assert caught.value.path == f"{SIGNATURE}/Object"


@pytest.mark.parametrize(
    ("where", "child", "path"),
    [
        ("KeyInfo", "KeyValue", f"{SIGNATURE}/KeyInfo/KeyValue"),
        ("KeyInfo", "KeyName", f"{SIGNATURE}/KeyInfo/KeyName"),
        ("KeyInfo/{ds}X509Data", "X509CRL", f"{SIGNATURE}/KeyInfo/X509Data/X509CRL"),
        ("SignatureValue/..", "SignatureValue", f"{SIGNATURE}/SignatureValue"),
    ],
)
def test_nothing_but_key_info_x509_data_in_the_signature(
    verifier: signing.Verifier, signers: dict[str, Signer], where: str, child: str, path: str
) -> None:
    root = etree.fromstring(_signed(signers))
    signature = root.find(f".//{DS}Signature")
    assert signature is not None
    parent = signature.find(DS + where.replace("{ds}", DS))
    assert parent is not None
    etree.SubElement(parent, DS + child).text = "AAAA"
    with pytest.raises(SignatureError) as caught:
        verifier.verify(etree.tostring(root))
    assert caught.value.code == ErrorCode.MALFORMED_SIGNATURE
    assert caught.value.path == path


def test_x509_subject_name_as_the_national_sdk_writes_it_is_allowed(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    root = etree.fromstring(_signed(signers))
    x509_data = root.find(f".//{DS}Signature/{DS}KeyInfo/{DS}X509Data")
    assert x509_data is not None
    etree.SubElement(x509_data, f"{DS}X509SubjectName").text = "CN=G22"
    assert verifier.verify(etree.tostring(root)).package.sender == "000.00.00.G22"


@pytest.mark.parametrize("extra", ["Object", "SignatureProperties", "KeyInfo"])
def test_edxml_header_holds_no_other_xml_dsig_element(extra: str) -> None:
    data = edxml.build(make_document()).replace(
        b"</edXML:edXMLHeader>",
        f'<ds:{extra} xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/></edXML:edXMLHeader>'.encode(),
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.UNEXPECTED
    assert caught.value.path == f"{HEADER}/{extra}"


def test_edxml_header_holds_one_signature(signers: dict[str, Signer]) -> None:
    signed = _signed(signers)
    twice = signed.replace(
        b"</edXML:edXMLHeader>", b"<edXML:Signature>x</edXML:Signature></edXML:edXMLHeader>"
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(twice)
    assert caught.value.code == ErrorCode.TOO_MANY
    assert caught.value.path == SIGNATURE


# --- 6: children matched on the full namespace ------------------------------------------


def test_a_foreign_namespace_element_is_never_read_as_ours() -> None:
    """``{xmldsig#}XXXXXTraceHeaderList`` has the length of our namespace plus the name."""
    data = edxml.build(make_document()).replace(
        b"</edXML:edXMLHeader>",
        b'<ds:XXXXXTraceHeaderList xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        b"<edXML:TraceHeader><edXML:OrganId>not-an-agency</edXML:OrganId></edXML:TraceHeader>"
        b"</ds:XXXXXTraceHeaderList></edXML:edXMLHeader>",
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.UNEXPECTED
    assert caught.value.path == f"{HEADER}/XXXXXTraceHeaderList"
    assert "http://www.w3.org/2000/09/xmldsig#" in caught.value.message


# --- 7: UTF-8 only, on the bytes -----------------------------------------------------------


def _as_text() -> str:
    """The package as text, without its encoding declaration."""
    return edxml.build(make_document()).decode().replace(" encoding='UTF-8'", "")


@pytest.mark.parametrize(
    ("encode", "value"),
    [
        (lambda t: t.encode("utf-16"), "UTF-16LE"),
        (
            lambda t: b"\xfe\xff" + t.encode("utf-16-be"),
            "UTF-16BE",
        ),
        (lambda t: t.encode("utf-32"), "UTF-32LE"),
        (lambda t: t.encode("utf-16-le"), None),
        (lambda t: t.encode("utf-32-be"), None),
    ],
    ids=["utf16-bom", "utf16be-bom", "utf32-bom", "utf16-no-bom", "utf32-no-bom"],
)
def test_utf16_and_utf32_are_refused_with_or_without_a_bom(encode, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(encode(_as_text()))
    assert caught.value.code == ErrorCode.NOT_UTF8
    assert caught.value.value == value


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "windows-1258", "UTF-16", "US-ASCII"])
def test_an_encoding_declaration_other_than_utf8_is_refused(encoding: str) -> None:
    """Even when the bytes happen to be ASCII and so valid in both."""
    data = edxml.build(make_document(subject="ASCII only")).replace(
        b"encoding='UTF-8'", f"encoding='{encoding}'".encode()
    )
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.NOT_UTF8
    assert caught.value.value == encoding


@pytest.mark.parametrize(
    "bad",
    [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe1\xbb", b"\x80"],
    ids=["overlong", "surrogate", "past-u10ffff", "truncated", "lone-continuation"],
)
def test_invalid_utf8_bytes_are_refused_with_their_position(bad: bytes) -> None:
    data = edxml.build(make_document(subject="Subject X"))
    data = data.replace(b"Subject X", b"Subject " + bad)
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.NOT_UTF8
    assert caught.value.line == 2
    at = data.index(bad)
    assert caught.value.issues[0].column == at - data.rindex(b"\n", 0, at)


def test_utf8_with_its_bom_and_a_lower_case_declaration_is_read() -> None:
    data = edxml.build(make_document()).replace(b"encoding='UTF-8'", b'encoding="utf-8"')
    assert edxml.parse(b"\xef\xbb\xbf" + data) == edxml.parse(data)


def test_utf8_split_across_the_check_s_chunks_is_read() -> None:
    """The UTF-8 check reads in 1 MiB chunks and never cuts a character in two."""
    subject = "Ế" * 200
    document = make_document(subject=subject)
    base = edxml.build(document)
    pad = (1024 * 1024 - base.index(subject.encode()) + 1) % 3  # one chunk edge mid-character
    padded = base.replace(
        b"<edXML:edXML", b"<!--" + b"x" * (1024 * 1024 + pad) + b"-->\n<edXML:edXML", 1
    )
    assert edxml.parse(padded).header.subject == subject  # type: ignore[union-attr]


# --- 11: the element count, before the tree is built ----------------------------------------

FLAT = textwrap.dedent(
    """
    import re, sys
    from backbone import edxml
    from backbone.errors import UnsafePackage
    data = (b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">'
            + b"<a/>" * 8_000_000 + b"</edXML>")
    try:
        edxml.parse(data)
    except UnsafePackage as exc:
        print(exc.code)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a
    # big pytest process would start with its parent's peak
    status = open("/proc/self/status").read()
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status)[1]) // 1024)
    """
)


def test_eight_million_empty_elements_are_refused_before_the_tree() -> None:
    data = b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">' + b"<a/>" * 300_000
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data + b"</edXML>")
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert "tags" in caught.value.message


def test_memory_stays_bounded_on_a_32_mb_flat_package() -> None:
    """In a fresh process (its peak memory its own): 32 MB of bytes, no tree of 8 million."""
    done = subprocess.run(
        [sys.executable, "-c", FLAT], capture_output=True, text=True, timeout=120, check=True
    )
    code, peak_mib = done.stdout.split()
    assert code == ErrorCode.TOO_LARGE
    assert int(peak_mib) < 300, f"peak RSS {peak_mib} MiB"


def test_a_package_to_a_thousand_recipients_is_within_the_bounds() -> None:
    recipients = [f"000.00.{i // 100:02d}.H{i % 100:02d}" for i in range(1_000)]
    package = edxml.parse(edxml.build(make_document(recipients=recipients)))
    assert len(package.header.to) == 1_000  # type: ignore[union-attr]


# --- 9 (rules) and 12: dates in range, ASCII digits ---------------------------------------


@pytest.mark.parametrize(
    ("date", "fault"),
    [
        ("9999/12/31", "implausible"),
        ("1944/12/31", "implausible"),
        (f"{datetime.now(UTC).year + 11}/01/01", "implausible"),
        ("２０２６/01/05", "yyyy/MM/dd"),
        ("2026/٠١/05", "yyyy/MM/dd"),
    ],
)
def test_implausible_or_non_ascii_promulgation_dates_are_refused(date: str, fault: str) -> None:
    document = make_document()
    header = document.header
    info = header.promulgation_info.model_copy(update={"promulgation_date": date})
    bad = document.model_copy(
        update={"header": header.model_copy(update={"promulgation_info": info})}
    )
    with pytest.raises(InvalidPackage) as caught:
        edxml.check(bad)
    assert caught.value.code == ErrorCode.BAD_DATE
    assert caught.value.path.endswith("/PromulgationInfo/PromulgationDate")
    assert fault in caught.value.message


@pytest.mark.parametrize("date", ["1945/01/01", f"{datetime.now(UTC).year + 10}/12/31"])
def test_the_bounds_of_plausible_dates_are_accepted(date: str) -> None:
    document = make_document()
    header = document.header
    info = header.promulgation_info.model_copy(update={"promulgation_date": date})
    edxml.check(
        document.model_copy(
            update={"header": header.model_copy(update={"promulgation_info": info})}
        )
    )


# --- the functions the validator calls from its worker threads ------------------------------


def test_parse_and_verify_from_many_threads_at_once(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    """Each thread gets the right answer for its own input, good and bad mixed."""
    good = _signed(signers)
    bad = _unused_namespaces(good, 2_000)
    wrong: list[str] = []

    def work(index: int) -> None:
        for _ in range(20):
            try:
                tree = edxml.load_tree(bad if index % 2 else good)
                verifier.verify(good, parsed=tree)
                if index % 2:
                    wrong.append("accepted the hostile package")
            except PackageError as exc:
                if not index % 2 or exc.code != ErrorCode.TOO_LARGE:
                    wrong.append(f"{index}: {exc}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_a_signature_whose_prefix_is_declared_on_the_root_verifies(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    """The Signature is checked on a copy that carries only the namespaces it uses; a ds
    prefix declared far above it must survive the copy."""
    declaration = b' xmlns:ds="http://www.w3.org/2000/09/xmldsig#"'
    signed = _signed(signers)
    assert signed.count(declaration) == 1
    moved = signed.replace(declaration, b"").replace(
        b"<edXML:edXML", b"<edXML:edXML" + declaration, 1
    )
    assert verifier.verify(moved).package == verifier.verify(signed).package


def test_a_megabyte_of_continuation_bytes_is_refused_not_looped_on() -> None:
    data = b"<edXML>" + b"\x80" * (3 * 1024 * 1024) + b"</edXML>"
    with pytest.raises(UnsafePackage) as caught:
        edxml.parse(data)
    assert caught.value.code == ErrorCode.NOT_UTF8
    assert caught.value.issues[0].column == 8


def test_more_than_ten_certificates_are_refused_before_chain_building(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    root = etree.fromstring(_signed(signers))
    x509_data = root.find(f".//{DS}Signature/{DS}KeyInfo/{DS}X509Data")
    assert x509_data is not None
    certificate = x509_data[0]
    for _ in range(10):
        x509_data.append(etree.fromstring(etree.tostring(certificate)))
    with pytest.raises(SignatureError) as caught:
        verifier.verify(etree.tostring(root))
    assert caught.value.code == ErrorCode.MALFORMED_SIGNATURE
    assert caught.value.path == f"{SIGNATURE}/KeyInfo/X509Data/X509Certificate"
    assert "at most 10" in caught.value.message
