"""The signing layer: what it accepts, and every way it refuses a package, on both engines."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from backbone import edxml, signing
from backbone.errors import ErrorCode, SignatureError, TrustConfigError
from backbone.signing import trust as trust_module

from ..conftest import SENDER, Signer, make_document, make_status

DS = "{http://www.w3.org/2000/09/xmldsig#}"
RSA_SHA256 = b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = b"http://www.w3.org/2000/09/xmldsig#rsa-sha1"


@pytest.fixture
def package() -> bytes:
    return edxml.build(make_document())


def _refused(verifier: signing.Verifier, data: bytes) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verifier.verify(data)
    return caught.value


def test_signed_package_verifies_and_parses_the_same(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    verified = verifier.verify(signed)
    assert verified.engine == verifier.engine
    assert verified.package == edxml.parse(package) == edxml.parse(signed)
    assert verified.fingerprint == signers["G22"].fingerprint
    assert edxml.check(verified.package) == verified.package


def test_signature_sits_last_in_the_header_over_the_whole_package(
    signers: dict[str, Signer], package: bytes
) -> None:
    root = etree.fromstring(signers["G22"].sign(package))
    header = root.find("{*}edXMLEnvelope/{*}edXMLHeader")
    assert header is not None
    assert [etree.QName(c).localname for c in header] == [
        "MessageHeader",
        "TraceHeaderList",
        "Signature",
    ]
    signature = header[-1]
    reference = signature.find(f"{DS}SignedInfo/{DS}Reference")
    assert reference is not None and reference.get("URI") == ""
    algorithms = [e.get("Algorithm") for e in signature.iter() if e.get("Algorithm")]
    assert algorithms == [
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    ]
    # the signer's certificate and its intermediate travel in X509Data
    assert len(signature.findall(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")) == 2


def test_status_packages_and_models_can_be_signed(
    verifier: signing.Verifier, signers: dict[str, Signer]
) -> None:
    status = make_status(reporter=SENDER)
    assert verifier.verify(signers["G22"].sign(status)).package == status


def test_ecdsa_signatures(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22-ec"].sign(package)
    assert b"ecdsa-sha256" in signed
    assert verifier.verify(signed).package == edxml.parse(package)


def test_one_changed_character_in_subject(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    tampered = signed.replace("liên thông".encode(), "liên thôn9".encode(), 1)
    assert tampered != signed
    assert _refused(verifier, tampered).code == ErrorCode.DIGEST_MISMATCH


def test_one_changed_byte_in_attachment_base64(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    start = signed.index(b"<edXML:ContentTransferEncoded>") + 40
    replacement = b"B" if signed[start : start + 1] != b"B" else b"C"
    tampered = signed[:start] + replacement + signed[start + 1 :]
    assert edxml.parse(tampered) != edxml.parse(signed)  # still valid base64, other bytes
    assert _refused(verifier, tampered).code == ErrorCode.DIGEST_MISMATCH


def test_signature_wrapping_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    """The signed MessageHeader is moved under an unsigned copy (inside ds:Object, which the
    enveloped transform drops) and a forged one takes its place: refused before any
    cryptography, as nothing but SignedInfo, SignatureValue and KeyInfo may be there."""
    root = etree.fromstring(signers["G22"].sign(package))
    header = root.find("{*}edXMLEnvelope/{*}edXMLHeader")
    assert header is not None
    message_header, signature = header[0], header[-1]
    forged = etree.fromstring(etree.tostring(message_header))
    forged.find("{*}Subject").text = "Forged subject"  # type: ignore[union-attr]
    wrapper = etree.SubElement(signature, f"{DS}Object")
    wrapper.append(message_header)
    header.insert(0, forged)
    refusal = _refused(verifier, etree.tostring(root))
    assert refusal.code == ErrorCode.MALFORMED_SIGNATURE
    assert refusal.path == "/edXML/edXMLEnvelope/edXMLHeader/Signature/Object"


def test_wrapping_the_whole_signed_package_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    """The whole signed package is hidden in a Signature/Object of a forged package."""
    original = etree.fromstring(signers["G22"].sign(package))
    forged = etree.fromstring(edxml.build(make_document(subject="Forged")))
    signature = original.find(f".//{DS}Signature")
    assert signature is not None
    forged.find("{*}edXMLEnvelope/{*}edXMLHeader").append(signature)  # type: ignore[union-attr]
    etree.SubElement(signature, f"{DS}Object").append(original)
    refusal = _refused(verifier, etree.tostring(forged))
    assert refusal.code == ErrorCode.MALFORMED_SIGNATURE
    assert refusal.path.endswith("/Signature/Object")


def test_a_second_signature_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    signature = re.search(rb"<ds:Signature.*</ds:Signature>", signed, re.S)
    assert signature is not None
    doubled = signed.replace(b"</edXML:edXMLHeader>", signature.group(0) + b"</edXML:edXMLHeader>")
    refusal = _refused(verifier, doubled)
    assert refusal.code == ErrorCode.MULTIPLE_SIGNATURES
    with pytest.raises(SignatureError, match="already carries a Signature"):
        signers["G22"].sign(signed)


def test_a_signature_elsewhere_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    root = etree.fromstring(signers["G22"].sign(package))
    signature = root.find(f".//{DS}Signature")
    assert signature is not None
    root.find("{*}edXMLEnvelope/{*}edXMLHeader/{*}MessageHeader").append(signature)  # type: ignore[union-attr]
    refusal = _refused(verifier, etree.tostring(root))
    assert refusal.code == ErrorCode.MALFORMED_SIGNATURE
    assert "MessageHeader" in refusal.path


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("other-ca", ErrorCode.UNTRUSTED_CHAIN),
        ("expired", ErrorCode.EXPIRED),
        ("future", ErrorCode.NOT_YET_VALID),
        ("revoked", ErrorCode.REVOKED),
        ("no-signing", ErrorCode.BAD_KEY_USAGE),
    ],
)
def test_unfit_certificates_are_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes, name: str, code: str
) -> None:
    refusal = _refused(verifier, signers[name].sign(package))
    assert refusal.code == code
    assert refusal.value is not None and SENDER in refusal.value  # names the certificate


def test_a_certificate_of_agency_a_on_a_package_from_b(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    refusal = _refused(verifier, signers["H41"].sign(package))
    assert refusal.code == ErrorCode.WRONG_AGENCY
    assert refusal.value == SENDER and refusal.path.endswith("/From/OrganId")


def test_fingerprint_binding_supports_rotation(
    trust: signing.TrustStore, signers: dict[str, Signer], package: bytes
) -> None:
    binding = signing.FingerprintBinding(
        {SENDER: [signers["G22"].fingerprint, signers["G22-rotated"].fingerprint.upper()]}
    )
    verifier = signing.Verifier(trust, binding)
    verifier.verify(signers["G22"].sign(package))
    verifier.verify(signers["G22-rotated"].sign(package))
    assert _refused(verifier, signers["G22-ec"].sign(package)).code == ErrorCode.WRONG_AGENCY
    # H41's own certificate, registered for H41 only, cannot speak for G22
    other = signing.Verifier(
        trust, signing.FingerprintBinding({"000.00.00.H41": [signers["H41"].fingerprint]})
    )
    assert _refused(other, signers["H41"].sign(package)).code == ErrorCode.WRONG_AGENCY


def test_either_binding(
    trust: signing.TrustStore, signers: dict[str, Signer], package: bytes
) -> None:
    either = signing.AnyBinding(
        signing.FingerprintBinding({SENDER: [signers["H41"].fingerprint]}),
        signing.SubjectBinding("CN"),  # the CN of dev certificates is the identifier too
    )
    verifier = signing.Verifier(trust, either)
    verifier.verify(signers["H41"].sign(package))
    verifier.verify(signers["G22"].sign(package))


def test_subject_attribute_names() -> None:
    assert signing.attribute_oid("uid") == signing.attribute_oid("0.9.2342.19200300.100.1.1")
    with pytest.raises(ValueError, match="unknown certificate subject attribute"):
        signing.attribute_oid("nonsense")


def test_unsigned_package_is_refused(verifier: signing.Verifier, package: bytes) -> None:
    refusal = _refused(verifier, package)
    assert refusal.code == ErrorCode.UNSIGNED and refusal.message == "the package is not signed"


def test_sha1_is_refused_without_the_legacy_flag(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    weak = signed.replace(RSA_SHA256, RSA_SHA1)
    refusal = _refused(verifier, weak)
    assert refusal.code == ErrorCode.WEAK_ALGORITHM
    assert "SHA-1" in refusal.message and "BACKBONE_ALLOW_SHA1" in refusal.message
    weak_digest = signed.replace(
        b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"
    )
    assert _refused(verifier, weak_digest).code == ErrorCode.WEAK_ALGORITHM


def test_the_legacy_flag_lets_sha1_reach_the_cryptography(
    trust: signing.TrustStore, signers: dict[str, Signer], package: bytes
) -> None:
    """With the flag, an altered algorithm is no longer refused as weak, but as forged."""
    signed = signers["G22"].sign(package)
    weak = signed.replace(RSA_SHA256, RSA_SHA1)
    legacy = signing.Verifier(trust, signing.SubjectBinding(), allow_sha1=True)
    assert _refused(legacy, weak).code == ErrorCode.BAD_SIGNATURE


def _edit_signature(signed: bytes, tag: str, text: str) -> bytes:
    root = etree.fromstring(signed)
    element = next(root.iter(f"{DS}{tag}"))
    element.text = text
    return etree.tostring(root)


def test_a_changed_signature_value_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    value = base64.b64decode(next(etree.fromstring(signed).iter(f"{DS}SignatureValue")).text or "")
    flipped = bytes([value[0] ^ 1]) + value[1:]
    tampered = _edit_signature(signed, "SignatureValue", base64.b64encode(flipped).decode())
    assert _refused(verifier, tampered).code == ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("tag", "text", "fragment"),
    [
        ("X509Certificate", "MIIFqTCCBJG", "ds:X509Certificate"),
        ("X509Certificate", "MIIFqTCC", "cannot be read (truncated or not DER)"),
        ("SignatureValue", "not base64 at all!", "ds:SignatureValue"),
        ("DigestValue", "", "no DigestValue"),
    ],
)
def test_malformed_signatures_are_refused(
    verifier: signing.Verifier,
    signers: dict[str, Signer],
    package: bytes,
    tag: str,
    text: str,
    fragment: str,
) -> None:
    refusal = _refused(verifier, _edit_signature(signers["G22"].sign(package), tag, text))
    assert refusal.code == ErrorCode.MALFORMED_SIGNATURE
    assert fragment in refusal.message


def test_a_reference_to_part_of_the_package_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package).replace(b'URI=""', b'URI="#header"')
    refusal = _refused(verifier, signed)
    assert refusal.code == ErrorCode.MALFORMED_SIGNATURE and refusal.value == "#header"


def test_an_extra_transform_is_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = (
        signers["G22"]
        .sign(package)
        .replace(
            b"<ds:Transforms>",
            b'<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"/>',
        )
    )
    assert _refused(verifier, signed).code == ErrorCode.MALFORMED_SIGNATURE


def test_hostile_input_is_refused_before_any_signature_work(verifier: signing.Verifier) -> None:
    with pytest.raises(edxml.PackageError) as caught:
        verifier.verify(b'<!DOCTYPE x [<!ENTITY a "b">]><edXML/>')
    assert caught.value.code == ErrorCode.DTD_FORBIDDEN


def test_revoked_certificate_is_refused_even_after_it_was_trusted(
    pki: signing.Pki, signers: dict[str, Signer], package: bytes, tmp_path: Path
) -> None:
    """A chain cached as trusted is still checked against the CRLs of a new trust store."""
    issued = pki.issue(SENDER, tmp_path)
    signer = Signer(issued.code, issued.key, issued.certificate, issued.fingerprint)
    signed = signer.sign(package)
    before = signing.TrustStore.from_files(pki.ca_bundle, pki.crls())
    signing.Verifier(before, signing.SubjectBinding()).verify(signed)
    pki.revoke(issued.certificate)
    after = signing.TrustStore.from_files(pki.ca_bundle, pki.crls())
    assert (
        _refused(signing.Verifier(after, signing.SubjectBinding()), signed).code
        == ErrorCode.REVOKED
    )


def test_cached_chain_still_expires(
    pki: signing.Pki, signers: dict[str, Signer], package: bytes
) -> None:
    clock = [datetime.now(UTC)]
    store = signing.TrustStore.from_files(pki.ca_bundle, pki.crls(), clock=lambda: clock[0])
    verifier = signing.Verifier(store, signing.SubjectBinding())
    signed = signers["G22"].sign(package)
    verifier.verify(signed)
    clock[0] += timedelta(days=366)
    refusal = _refused(verifier, signed)
    # a year on, the certificate has expired (and so has the CRL: either is a refusal)
    assert refusal.code in (ErrorCode.EXPIRED, ErrorCode.REVOCATION_UNKNOWN)
    clock[0] = datetime.now(UTC) + timedelta(days=8)  # the CRL lapsed, the certificate not
    assert _refused(verifier, signed).code == ErrorCode.REVOCATION_UNKNOWN


def _crl_signed_by(
    issuer_name: x509.Name, key: rsa.RSAPrivateKey, *, next_update: datetime
) -> bytes:
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name)
        .last_update(min(now, next_update) - timedelta(days=1))
        .next_update(next_update)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def test_a_crl_not_signed_by_its_issuer_is_an_error(
    pki: signing.Pki, signers: dict[str, Signer], package: bytes, tmp_path: Path
) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuing = x509.load_pem_x509_certificate((pki.directory / "intermediate-ca.pem").read_bytes())
    root = x509.load_pem_x509_certificate((pki.directory / "root-ca.pem").read_bytes())
    forged = tmp_path / "forged-crl.pem"
    forged.write_bytes(
        _crl_signed_by(issuing.subject, impostor, next_update=datetime.now(UTC) + timedelta(days=1))
    )
    store = signing.TrustStore.from_files(pki.ca_bundle, [forged])
    refusal = _refused(
        signing.Verifier(store, signing.SubjectBinding()), signers["G22"].sign(package)
    )
    assert refusal.code == ErrorCode.REVOCATION_UNKNOWN and "not signed" in refusal.message
    # for an anchor's CRL the fault is found when the trust store is loaded
    forged.write_bytes(
        _crl_signed_by(root.subject, impostor, next_update=datetime.now(UTC) + timedelta(days=1))
    )
    with pytest.raises(TrustConfigError, match="not signed"):
        signing.TrustStore.from_files(pki.ca_bundle, [forged])


def _stale_crl(pki: signing.Pki, tmp_path: Path) -> Path:
    """A CRL of the issuing CA, properly signed, whose nextUpdate passed an hour ago."""
    issuing = x509.load_pem_x509_certificate((pki.directory / "intermediate-ca.pem").read_bytes())
    key = serialization.load_pem_private_key(
        (pki.directory / "intermediate-ca.key").read_bytes(), None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    stale = tmp_path / "stale-crl.pem"
    stale.write_bytes(
        _crl_signed_by(issuing.subject, key, next_update=datetime.now(UTC) - timedelta(hours=1))
    )
    return stale


def test_an_expired_crl_is_an_error(
    pki: signing.Pki, signers: dict[str, Signer], package: bytes, tmp_path: Path
) -> None:
    stale = _stale_crl(pki, tmp_path)
    store = signing.TrustStore.from_files(pki.ca_bundle, [stale], refresh_seconds=0)
    refusal = _refused(
        signing.Verifier(store, signing.SubjectBinding()), signers["G22"].sign(package)
    )
    assert refusal.code == ErrorCode.REVOCATION_UNKNOWN and "out of date" in refusal.message


def test_an_out_of_date_crl_is_read_again_once_per_interval_not_per_package(
    pki: signing.Pki,
    signers: dict[str, Signer],
    package: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = _stale_crl(pki, tmp_path)
    store = signing.TrustStore.from_files(pki.ca_bundle, [stale], refresh_seconds=3600)
    loads: list[int] = []
    real = trust_module._load_crls

    def counted(files: Any) -> Any:
        loads.append(1)
        return real(files)

    monkeypatch.setattr(trust_module, "_load_crls", counted)
    verifier = signing.Verifier(store, signing.SubjectBinding())
    signed = signers["G22"].sign(package)
    for _ in range(5):
        assert _refused(verifier, signed).code == ErrorCode.REVOCATION_UNKNOWN
    assert loads == []  # the next look is an hour away
    store.refresh_every(0)
    _refused(verifier, signed)
    assert loads == [1]


def test_trust_configuration_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TrustConfigError, match=r"nope\.pem"):
        signing.TrustStore.from_files(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TrustConfigError, match=r"garbage\.pem"):
        signing.TrustStore.from_files(garbage)


@pytest.mark.parametrize(
    "name", ["edoc_revocation.edxml", "edoc_update.edxml", "edoc_replacement.edxml"]
)
def test_the_business_samples_are_refused_as_unsigned(
    verifier: signing.Verifier, interop_dir: Path, name: str
) -> None:
    refusal = _refused(verifier, (interop_dir / name).read_bytes())
    assert refusal.code == ErrorCode.UNSIGNED
    assert "not in the XML-DSig namespace" in refusal.message


def test_processing_instructions_outside_the_root_are_refused(
    verifier: signing.Verifier, signers: dict[str, Signer], package: bytes
) -> None:
    signed = signers["G22"].sign(package)
    declaration_end = signed.index(b"?>") + 2
    with_pi = (
        signed[:declaration_end] + b'<?xml-stylesheet href="x.xsl"?>' + signed[declaration_end:]
    )
    assert _refused(verifier, with_pi).code == ErrorCode.MALFORMED_SIGNATURE
