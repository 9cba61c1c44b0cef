"""Verifying the enveloped XML-DSig of untrusted edXML packages.

Our strict checks run first (exactly one signature, last in ``edXMLHeader``, holding
nothing but SignedInfo, SignatureValue and KeyInfo/X509Data, one Reference with
``URI=""``, known and strong algorithms, a readable certificate that chains to a trust
anchor), then the cryptography, by one of two engines:

- ``fast``: for the profile the backbone writes and the national axis SDK writes
  (exclusive C14N for SignedInfo and the reference, transforms enveloped-signature then
  exclusive C14N): lxml's canonicaliser, hashlib and cryptography, on the tree we
  already parsed. It is differentially tested against signxml and xmlsec1.
- ``signxml``: everything else (inclusive C14N, legacy packages).

Either way the package model is read from the tree the signature covers, never from
the raw input: the fast engine reads the very tree whose canonical form it digested,
with the Signature removed; the signxml engine reads signxml's verified result.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureMethod,
)
from signxml.exceptions import InvalidDigest, SignXMLException
from signxml.exceptions import InvalidSignature as SignXMLInvalidSignature
from signxml.processor import get_schema
from signxml.verifier import SignatureConfiguration, XMLVerifier

from .. import edxml
from ..edxml._safexml import parse_untrusted, parser_for
from ..edxml.limits import DEFAULT_LIMITS, Limits
from ..edxml.models import DSIG_NAMESPACE
from ..edxml.paths import SENDER, SIGNATURE
from ..errors import ErrorCode, Issue, SignatureError
from .binding import Binding
from .keys import DS, ED, ENVELOPED, EXC_C14N, HEADER_PATH
from .trust import TrustedChain, TrustStore, refuse

Engine = Literal["fast", "signxml"]

_INCLUSIVE_NAMESPACES = f"{{{EXC_C14N}}}InclusiveNamespaces"
_CERTIFICATE_CACHE = 4096
_local = threading.local()
_SIGNATURE_CHILDREN: dict[str, int | None] = {"SignedInfo": 1, "SignatureValue": 1, "KeyInfo": 1}
_MAX_CERTIFICATES = 10  # the signer and its chain; more only feeds chain building
_X509_CHILDREN: dict[str, int | None] = {
    "X509Certificate": _MAX_CERTIFICATES,
    "X509SubjectName": None,
    "X509IssuerSerial": None,
    "X509SKI": None,
}
C14N_ALGORITHMS = {m.value for m in CanonicalizationMethod}

_SHA1_SIGNATURES = {SignatureMethod.RSA_SHA1.value, SignatureMethod.ECDSA_SHA1.value}
_STRONG_SIGNATURES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    SignatureMethod.RSA_SHA256.value: ("rsa", hashes.SHA256),
    SignatureMethod.RSA_SHA384.value: ("rsa", hashes.SHA384),
    SignatureMethod.RSA_SHA512.value: ("rsa", hashes.SHA512),
    SignatureMethod.ECDSA_SHA256.value: ("ec", hashes.SHA256),
    SignatureMethod.ECDSA_SHA384.value: ("ec", hashes.SHA384),
    SignatureMethod.ECDSA_SHA512.value: ("ec", hashes.SHA512),
}
_DIGESTS = {
    DigestAlgorithm.SHA256.value: "sha256",
    DigestAlgorithm.SHA384.value: "sha384",
    DigestAlgorithm.SHA512.value: "sha512",
}
_SHA1_DIGEST = DigestAlgorithm.SHA1.value
_LEGACY_HINT = (
    "SHA-1 is refused; an operator who must accept legacy packages sets "
    "BACKBONE_ALLOW_SHA1=true (backbone validate --allow-sha1)"
)


@dataclass(frozen=True, slots=True)
class Verified:
    """A package whose signature checked out, read from what the signature covers."""

    package: edxml.Package
    chain: TrustedChain
    engine: Engine

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain.certificate

    @property
    def fingerprint(self) -> str:
        return self.chain.fingerprint


@dataclass(frozen=True, slots=True)
class _SignedInfo:
    """What SignedInfo declares, read and checked before any cryptography."""

    element: etree._Element
    c14n: str
    signature_method: str
    transforms: tuple[str, ...]
    digest_method: str
    digest_value: bytes
    signature_value: bytes
    certificates: tuple[x509.Certificate, ...]
    certificate_key: tuple[str, ...]
    inclusive_prefixes: bool

    @property
    def fast(self) -> bool:
        return (
            self.c14n == EXC_C14N
            and self.transforms == (ENVELOPED, EXC_C14N)
            and self.signature_method in _STRONG_SIGNATURES
            and self.digest_method in _DIGESTS
            and not self.inclusive_prefixes
        )


def _malformed(message: str, value: str | None = None, path: str = SIGNATURE) -> SignatureError:
    return refuse(ErrorCode.MALFORMED_SIGNATURE, message, value, path)


def _b64(element: etree._Element | None, what: str) -> bytes:
    if element is None or not (element.text or "").strip():
        raise _malformed(f"the Signature has no {what}")
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"the {what} is not valid base64", element.text) from None


def _algorithm(parent: etree._Element, tag: str) -> str:
    element = parent.find(DS + tag)
    if element is None or not element.get("Algorithm"):
        raise _malformed(f"the Signature has no {tag} with an Algorithm")
    return str(element.get("Algorithm"))


class Verifier:
    """Verifies package signatures against a trust store and a certificate binding.

    With ``binding=None`` the caller checks the binding itself (the validator, with a
    :class:`CertificateBinding`, which asks the registry asynchronously) and refuses with
    :func:`wrong_agency`.

    Thread-safe: one Verifier may verify in several threads at once (the validator runs
    the CPU-heavy checks off its event loop). Its cache is locked; lxml parsers and
    schema validators are per thread; each call works on its own tree.
    """

    def __init__(
        self,
        trust: TrustStore,
        binding: Binding | None,
        *,
        allow_sha1: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        engine: Engine = "fast",
    ) -> None:
        self.trust = trust
        self.binding = binding
        self.allow_sha1 = allow_sha1
        self.limits = limits
        self.engine = engine
        self._parsed: OrderedDict[tuple[str, ...], tuple[x509.Certificate, ...]] = OrderedDict()
        self._parsed_lock = threading.Lock()  # the validator verifies in worker threads

    def verify(
        self,
        data: bytes,
        *,
        parsed: tuple[etree._Element, edxml.Package] | None = None,
    ) -> Verified:
        """Verify ``data``; return the package read from what the signature covers.

        ``parsed``: ``data`` already parsed by :func:`edxml.load_tree` and the package read
        from it, so nothing is parsed twice. The tree loses its signature. When the
        signature covers the whole document (the fast path), that package is what it
        covers; otherwise the signed part is read again.
        """
        root = (
            parse_untrusted(data, self.limits, keep_comments=True) if parsed is None else parsed[0]
        )
        signature = self._locate(root)
        _check_signature_content(signature)  # before copying: nothing unsigned is copied
        # Checked and canonicalised on a copy: it carries only the namespaces it uses,
        # while in the tree every subtree operation pays for every namespace in scope.
        # Exclusive C14N (the fast engine's) gives the same bytes either way.
        info = self._signed_info(copy.deepcopy(signature))
        chain = self.trust.validate(info.certificates, info.certificate_key)
        engine: Engine = "fast" if self.engine == "fast" and info.fast else "signxml"
        if engine == "fast":
            signed_root = self._verify_fast(root, signature, info, chain)
            package = parsed[1] if parsed is not None else edxml.read_tree(signed_root, self.limits)
        else:
            signed_root = self._verify_signxml(root, len(data), chain)
            package = edxml.read_tree(signed_root, self.limits)
        verified = Verified(package, chain, engine)
        if self.binding is not None and not self.binding.binds(
            chain.certificate, chain.fingerprint, verified.package.sender or ""
        ):
            raise wrong_agency(verified)
        return verified

    def _locate(self, root: etree._Element) -> etree._Element:
        # Implementations disagree on whether URI="" covers processing instructions
        # outside the root element (xmlsec1 yes, signxml no): refuse them outright.
        outside = [*root.itersiblings(preceding=True), *root.itersiblings()]
        if any(isinstance(node, etree._ProcessingInstruction) for node in outside):
            raise _malformed("a signed package has no processing instruction outside edXML")
        signatures = list(root.iter(DS + "Signature"))
        if not signatures:
            header = root.find("/".join(HEADER_PATH))
            stray = header.find(ED + "Signature") if header is not None else None
            if stray is not None:
                raise refuse(
                    ErrorCode.UNSIGNED,
                    "the package is not signed: its Signature element is not in the XML-DSig "
                    f"namespace {DSIG_NAMESPACE}",
                    path=SIGNATURE,
                )
            raise refuse(ErrorCode.UNSIGNED, "the package is not signed", path=SIGNATURE)
        if len(signatures) > 1:
            raise refuse(
                ErrorCode.MULTIPLE_SIGNATURES,
                f"the package carries {len(signatures)} XML-DSig signatures; one is allowed",
                path=SIGNATURE,
            )
        signature = signatures[0]
        header = signature.getparent()
        envelope = header.getparent() if header is not None else None
        if (
            header is None
            or envelope is None
            or envelope.getparent() is not root
            or (envelope.tag, header.tag) != HEADER_PATH
        ):
            raise _malformed(
                "the Signature must be a child of edXMLHeader",
                path=root.getroottree().getpath(signature),
            )
        if any(True for _ in signature.itersiblings(etree.Element)):
            raise _malformed("the Signature must be the last element of edXMLHeader")
        return signature

    def _signed_info(self, signature: etree._Element) -> _SignedInfo:
        _check_signature_schema(signature)
        signed_info = signature.find(DS + "SignedInfo")
        if signed_info is None:
            raise _malformed("the Signature has no SignedInfo")
        c14n = _algorithm(signed_info, "CanonicalizationMethod")
        if c14n not in C14N_ALGORITHMS:
            raise _malformed("unsupported canonicalization", c14n)
        method = _algorithm(signed_info, "SignatureMethod")
        references = signed_info.findall(DS + "Reference")
        if len(references) != 1:
            raise _malformed(
                f"the Signature must have exactly one Reference, found {len(references)}"
            )
        reference = references[0]
        if reference.get("URI") != "":
            raise _malformed(
                'the Reference must cover the whole package (URI="")', reference.get("URI")
            )
        transforms = tuple(
            str(t.get("Algorithm")) for t in reference.iterfind(f"{DS}Transforms/{DS}Transform")
        )
        if ENVELOPED not in transforms:
            raise _malformed("the Reference lacks the enveloped-signature transform")
        others = [t for t in transforms if t != ENVELOPED]
        if len(others) > 1 or any(t not in C14N_ALGORITHMS for t in others):
            raise _malformed(
                "unsupported transforms (only canonicalization is allowed)", ", ".join(others)
            )
        digest = _algorithm(reference, "DigestMethod")
        for algorithm in (method, digest):
            if algorithm in _SHA1_SIGNATURES or algorithm == _SHA1_DIGEST:
                if not self.allow_sha1:
                    raise refuse(ErrorCode.WEAK_ALGORITHM, _LEGACY_HINT, algorithm, SIGNATURE)
            elif algorithm not in _STRONG_SIGNATURES and algorithm not in _DIGESTS:
                raise refuse(
                    ErrorCode.WEAK_ALGORITHM,
                    "unsupported signature or digest algorithm",
                    algorithm,
                    SIGNATURE,
                )
        key_info = signature.find(DS + "KeyInfo")
        raw_certificates = (
            key_info.findall(f"{DS}X509Data/{DS}X509Certificate") if key_info is not None else []
        )
        if not raw_certificates:
            raise _malformed("the Signature carries no X509Certificate in KeyInfo/X509Data")
        texts = tuple(element.text or "" for element in raw_certificates)
        return _SignedInfo(
            element=signed_info,
            c14n=c14n,
            signature_method=method,
            transforms=transforms,
            digest_method=digest,
            digest_value=_b64(reference.find(DS + "DigestValue"), "DigestValue"),
            signature_value=_b64(signature.find(DS + "SignatureValue"), "SignatureValue"),
            certificates=self._certificates(texts, raw_certificates),
            certificate_key=texts,
            inclusive_prefixes=any(True for _ in signed_info.iter(_INCLUSIVE_NAMESPACES)),
        )

    def _certificates(
        self, texts: tuple[str, ...], elements: Sequence[etree._Element]
    ) -> tuple[x509.Certificate, ...]:
        """The certificates of X509Data, signer first; remembered by their base64 text."""
        with self._parsed_lock:
            cached = self._parsed.get(texts)
        if cached is not None:
            return cached
        certificates = []
        for element in elements:
            try:
                der = base64.b64decode("".join((element.text or "").split()), validate=True)
                certificates.append(x509.load_der_x509_certificate(der))
            except (binascii.Error, ValueError):
                raise _malformed(
                    "the X509Certificate in KeyInfo cannot be read (truncated or not DER)",
                    element.text,
                ) from None
        ordered = _signer_first(certificates)
        with self._parsed_lock:
            self._parsed[texts] = ordered
            if len(self._parsed) > _CERTIFICATE_CACHE:
                self._parsed.popitem(last=False)
        return ordered

    def _verify_fast(
        self,
        root: etree._Element,
        signature: etree._Element,
        info: _SignedInfo,
        chain: TrustedChain,
    ) -> etree._Element:
        kind, hash_type = _STRONG_SIGNATURES[info.signature_method]
        signed_info = etree.tostring(
            info.element, method="c14n", exclusive=True, with_comments=False
        )
        public_key = chain.certificate.public_key()
        try:
            if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(
                    info.signature_value, signed_info, padding.PKCS1v15(), hash_type()
                )
            elif kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
                size = (public_key.key_size + 7) // 8
                if len(info.signature_value) != 2 * size:
                    raise InvalidSignature
                r = int.from_bytes(info.signature_value[:size], "big")
                s = int.from_bytes(info.signature_value[size:], "big")
                public_key.verify(encode_dss_signature(r, s), signed_info, ec.ECDSA(hash_type()))
            else:
                raise _malformed(
                    "the signature algorithm does not match the certificate's key",
                    info.signature_method,
                )
        except InvalidSignature:
            raise refuse(
                ErrorCode.BAD_SIGNATURE,
                "the SignatureValue does not verify with the signer's certificate",
                path=f"{SIGNATURE}/SignatureValue",
            ) from None
        _detach(signature)
        canonical = etree.tostring(
            root.getroottree(), method="c14n", exclusive=True, with_comments=False
        )
        if hashlib.new(_DIGESTS[info.digest_method], canonical).digest() != info.digest_value:
            raise refuse(
                ErrorCode.DIGEST_MISMATCH,
                "the package was altered after signing: its digest does not match the signed one",
                path=f"{SIGNATURE}/SignedInfo/Reference/DigestValue",
            )
        return root

    def _verify_signxml(
        self, root: etree._Element, size: int, chain: TrustedChain
    ) -> etree._Element:
        strong = frozenset(
            m for m in SignatureMethod if "SHA1" not in m.name and "HMAC" not in m.name
        )
        digests = frozenset(d for d in DigestAlgorithm if "SHA1" not in d.name)
        if self.allow_sha1:
            strong |= {SignatureMethod.RSA_SHA1, SignatureMethod.ECDSA_SHA1}
            digests |= {DigestAlgorithm.SHA1}
        config = SignatureConfiguration(
            location=f"./{HEADER_PATH[0]}/{HEADER_PATH[1]}/",
            expect_references=1,
            signature_methods=strong,
            digest_algorithms=digests,
        )
        verifier = _Verifier()
        # signxml re-parses what it canonicalises; give it our safe parser, which also
        # copes with attachments past libxml2's 10 MB text-node limit.
        verifier._parser = parser_for(size, keep_comments=True)  # type: ignore[assignment]
        try:
            result = verifier.verify(root, x509_cert=chain.certificate, expect_config=config)
        except InvalidDigest:
            raise refuse(
                ErrorCode.DIGEST_MISMATCH,
                "the package was altered after signing: its digest does not match the signed one",
                path=f"{SIGNATURE}/SignedInfo/Reference/DigestValue",
            ) from None
        except SignXMLInvalidSignature as exc:
            raise refuse(
                ErrorCode.BAD_SIGNATURE,
                f"the SignatureValue does not verify with the signer's certificate ({exc})",
                path=f"{SIGNATURE}/SignatureValue",
            ) from None
        except (SignXMLException, etree.LxmlError, ValueError) as exc:
            raise _malformed(f"the signature cannot be verified: {exc}") from None
        signed = result.signed_xml  # type: ignore[union-attr]
        if signed is None:
            raise _malformed("the signed content is not XML")
        return signed


def wrong_agency(verified: Verified) -> SignatureError:
    """The refusal for a valid signature by a certificate not bound to the sender."""
    chain = verified.chain
    return SignatureError(
        Issue.of(
            ErrorCode.WRONG_AGENCY,
            SENDER,
            f"the signer's certificate ({chain.certificate.subject.rfc4514_string()}, "
            f"SHA-256 {chain.fingerprint[:16]}…) is not bound to the sending agency",
            verified.package.sender or "",
        )
    )


def _check_signature_content(signature: etree._Element) -> None:
    """Only SignedInfo, SignatureValue and KeyInfo/X509Data inside the Signature.

    The enveloped transform takes the whole Signature out of the digest, so anything
    else in it (a ds:Object holding a forged MessageHeader) is unsigned content that a
    recipient's reader might take for the package's own.
    """
    _allow_children(signature, _SIGNATURE_CHILDREN, SIGNATURE)
    key_info = signature.find(DS + "KeyInfo")
    if key_info is not None:
        path = f"{SIGNATURE}/KeyInfo"
        _allow_children(key_info, {"X509Data": 1}, path)
        x509_data = key_info.find(DS + "X509Data")
        if x509_data is not None:
            _allow_children(x509_data, _X509_CHILDREN, f"{path}/X509Data")


def _allow_children(element: etree._Element, allowed: dict[str, int | None], path: str) -> None:
    """Every child element is an XML-DSig one named in ``allowed``, at most that often
    (None: any number); comments and processing instructions are not content."""
    counts: dict[str, int] = {}
    for child in element.iterchildren(etree.Element):
        tag = str(child.tag)
        local = tag[len(DS) :] if tag.startswith(DS) else None
        if local is None or local not in allowed:
            shown = local or tag
            raise _malformed(
                f"{shown} does not belong in {path.rsplit('/', 1)[-1]}: a Signature holds "
                "only SignedInfo, SignatureValue and KeyInfo/X509Data",
                path=f"{path}/{shown}",
            )
        counts[local] = counts.get(local, 0) + 1
        most = allowed[local]
        if most is not None and counts[local] > most:
            raise _malformed(
                f"{local} may occur at most {most} times in {path.rsplit('/', 1)[-1]}"
                if most > 1
                else f"{local} may occur once in {path.rsplit('/', 1)[-1]}",
                path=f"{path}/{local}",
            )


class _Verifier(XMLVerifier):
    """signxml's verifier on this thread's copies of the XML-DSig schema."""

    @classmethod
    def schemas(cls) -> list[etree.XMLSchema]:
        return _signature_schemas()


def _signature_schemas() -> list[etree.XMLSchema]:
    """signxml's XML-DSig schemas, one set per thread: an lxml validator keeps the error
    log of its last run, so threads must not share one (signxml shares a class-wide set)."""
    schemas: list[etree.XMLSchema] | None = getattr(_local, "schemas", None)
    if schemas is None:
        schemas = [get_schema(name) for name in XMLVerifier.schema_files]
        _local.schemas = schemas
    return schemas


def _check_signature_schema(signature: etree._Element) -> None:
    """The Signature must follow the XML-DSig schema (signxml's copy), as signxml requires."""
    errors = ""
    for schema in _signature_schemas():
        if schema.validate(signature):
            return
        last = getattr(schema.error_log, "last_error", None)
        errors = str(last.message) if last is not None else ""
    raise _malformed(
        f"the Signature does not follow the XML-DSig schema: {errors.replace(DS, 'ds:')}"
    )


def _signer_first(certificates: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    """X509Data has no order (XML-DSig): put the one certificate nobody else was issued by first."""
    issuers = {c.issuer for c in certificates}
    leaves = [c for c in certificates if c.subject not in issuers or len(certificates) == 1]
    leaf = leaves[0] if leaves else certificates[0]
    return (leaf, *[c for c in certificates if c is not leaf])


def _detach(element: etree._Element) -> None:
    """Remove ``element`` but keep the text after it, as the enveloped transform does."""
    parent = element.getparent()
    assert parent is not None
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)
