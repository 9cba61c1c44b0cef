"""Interoperability with an independent XML-DSig implementation (xmlsec1), both ways, and a
differential test: whatever our fast engine accepts, signxml and xmlsec1 accept too."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml.verifier import XMLVerifier

from backbone import edxml, signing
from backbone.errors import ErrorCode, PackageError, SignatureError

from ..conftest import Signer, make_document

pytestmark = pytest.mark.interop
DS = "http://www.w3.org/2000/09/xmldsig#"

TEMPLATE = """<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="{c14n}"/><ds:SignatureMethod Algorithm="{method}"/>
<ds:Reference URI=""><ds:Transforms>
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<ds:Transform Algorithm="{c14n}"/></ds:Transforms>
<ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue/></ds:Reference></ds:SignedInfo>
<ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>"""
MODERN = {
    "c14n": "http://www.w3.org/2001/10/xml-exc-c14n#",
    "method": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "digest": "http://www.w3.org/2001/04/xmlenc#sha256",
}
LEGACY = {  # what the national axis SDK's old packages use
    "c14n": "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "method": "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
    "digest": "http://www.w3.org/2000/09/xmldsig#sha1",
}


@pytest.fixture(scope="session")
def xmlsec1() -> str:
    found = shutil.which("xmlsec1")
    if found is None:
        message = "xmlsec1 is not installed (Debian package xmlsec1; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def xmlsec_verifies(xmlsec1: str, data: bytes, anchor: Path, workdir: Path) -> bool:
    path = workdir / "candidate.xml"
    path.write_bytes(data)
    result = subprocess.run(
        [
            xmlsec1,
            "--verify",
            "--trusted-pem",
            str(anchor),
            "--enabled-reference-uris",
            "empty",
            str(path),
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0


def xmlsec_sign(
    xmlsec1: str, signer: Signer, data: bytes, workdir: Path, algorithms: dict[str, str]
) -> bytes:
    """Sign with xmlsec1 from a template, putting the certificate chain in X509Data."""
    template = TEMPLATE.format(**algorithms).replace("\n", "").encode()
    source = workdir / "template.xml"
    source.write_bytes(data.replace(b"</edXML:edXMLHeader>", template + b"</edXML:edXMLHeader>"))
    pems = [c.public_bytes(encoding=Encoding.PEM) for c in signer.certificates]
    cert_files = []
    for index, pem in enumerate(pems):
        cert_file = workdir / f"cert{index}.pem"
        cert_file.write_bytes(pem)
        cert_files.append(str(cert_file))
    out = workdir / "signed.xml"
    subprocess.run(
        [
            xmlsec1,
            "--sign",
            "--privkey-pem",
            ",".join([str(signer.key_path), *cert_files]),
            "--output",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out.read_bytes()


def test_backbone_sign_verifies_with_xmlsec1(
    xmlsec1: str, pki: signing.Pki, signers: dict[str, Signer], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from backbone.cli import app

    unsigned = tmp_path / "letter.edxml"
    unsigned.write_bytes(edxml.build(make_document()))
    signer = signers["G22"]
    result = CliRunner().invoke(
        app, ["sign", str(unsigned), "--key", str(signer.key_path), "--cert", str(signer.cert_path)]
    )
    assert result.exit_code == 0, result.output
    signed = (tmp_path / "letter.signed.edxml").read_bytes()
    assert xmlsec_verifies(xmlsec1, signed, pki.ca_bundle, tmp_path)
    assert xmlsec_verifies(
        xmlsec1, signers["G22-ec"].sign(unsigned.read_bytes()), pki.ca_bundle, tmp_path
    )
    # and xmlsec1 is not a rubber stamp: one changed character fails it
    assert not xmlsec_verifies(
        xmlsec1, signed.replace(b"7816", b"7817", 1), pki.ca_bundle, tmp_path
    )


def test_xmlsec1_signed_package_verifies_with_ours(
    xmlsec1: str, trust: signing.TrustStore, signers: dict[str, Signer], tmp_path: Path
) -> None:
    package = make_document()
    signed = xmlsec_sign(xmlsec1, signers["G22"], edxml.build(package), tmp_path, MODERN)
    for engine in ("fast", "signxml"):
        verified = signing.Verifier(trust, signing.SubjectBinding(), engine=engine).verify(signed)
        assert verified.package == package and verified.engine == engine


def test_legacy_sha1_package_from_xmlsec1_needs_the_flag(
    xmlsec1: str, trust: signing.TrustStore, signers: dict[str, Signer], tmp_path: Path
) -> None:
    package = make_document()
    signed = xmlsec_sign(xmlsec1, signers["G22"], edxml.build(package), tmp_path, LEGACY)
    strict = signing.Verifier(trust, signing.SubjectBinding())
    with pytest.raises(SignatureError) as caught:
        strict.verify(signed)
    assert caught.value.code == ErrorCode.WEAK_ALGORITHM
    legacy = signing.Verifier(trust, signing.SubjectBinding(), allow_sha1=True)
    verified = legacy.verify(signed)
    assert verified.package == package and verified.engine == "signxml"
    with pytest.raises(SignatureError) as caught:
        legacy.verify(signed.replace(b"7816", b"7817", 1))
    assert caught.value.code == ErrorCode.DIGEST_MISMATCH


# --- differential: mutants of signed packages --------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["drop", "duplicate", "swap", "text", "attribute", "comment", "tail"]),
        st.integers(min_value=0, max_value=10_000),
        _text,
    ),
    min_size=1,
    max_size=3,
)


def _mutate(data: bytes, ops: list[tuple[str, int, str]]) -> bytes:
    root = etree.fromstring(data)
    for op, index, text in ops:
        elements = [e for e in root.iter(etree.Element) if e is not root]
        if not elements:
            break
        target = elements[index % len(elements)]
        parent = target.getparent()
        assert parent is not None
        if op == "drop":
            parent.remove(target)
        elif op == "duplicate":
            target.addnext(copy.deepcopy(target))
        elif op == "swap" and target.getnext() is not None:
            target.getnext().addnext(target)  # type: ignore[union-attr]
        elif op == "text":
            target.text = text
        elif op == "attribute":
            target.set("Id", text or "x")
        elif op == "comment":
            target.addprevious(etree.Comment(text.replace("-", "") or "c"))
        elif op == "tail":
            target.tail = (target.tail or "") + (text.strip() and " ")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="session")
def seeds(signers: dict[str, Signer]) -> list[bytes]:
    package = edxml.build(make_document())
    return [signers["G22"].sign(package), signers["G22-ec"].sign(package)]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=0, max_value=1), _ops)
def test_fast_engine_never_accepts_what_signxml_or_xmlsec1_refuse(
    xmlsec1: str,
    pki: signing.Pki,
    trust: signing.TrustStore,
    seeds: list[bytes],
    tmp_path: Path,
    seed: int,
    ops: list[tuple[str, int, str]],
) -> None:
    mutant = _mutate(seeds[seed], ops)
    outcomes: dict[str, edxml.Package | None] = {}
    for engine in ("fast", "signxml"):
        verifier = signing.Verifier(trust, signing.SubjectBinding(), engine=engine)
        try:
            outcomes[engine] = verifier.verify(mutant).package
        except PackageError:
            outcomes[engine] = None
    assert (outcomes["fast"] is None) == (outcomes["signxml"] is None)
    if outcomes["fast"] is None:
        return
    assert outcomes["fast"] == outcomes["signxml"]
    reference = XMLVerifier().verify(mutant, ca_pem_file=str(pki.ca_bundle))
    assert not isinstance(reference, list) and reference.signed_xml is not None
    assert edxml.read_tree(reference.signed_xml) == outcomes["fast"]
    assert xmlsec_verifies(xmlsec1, mutant, pki.ca_bundle, tmp_path)


def test_the_differential_test_sees_both_outcomes(
    trust: signing.TrustStore, seeds: list[bytes]
) -> None:
    verifier = signing.Verifier(trust, signing.SubjectBinding())
    accepted = refused = 0
    for index in range(0, 120, 3):
        mutant = _mutate(seeds[0], [("tail", index, "x")])
        try:
            verifier.verify(mutant)
            accepted += 1
        except PackageError:
            refused += 1
    assert accepted and refused  # whitespace in KeyInfo is harmless, in signed content not
