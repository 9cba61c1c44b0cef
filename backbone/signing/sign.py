"""Signing packages: the enveloped XML-DSig profile the verifier's fast engine checks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod

from .. import edxml
from ..edxml._safexml import parse_untrusted
from ..edxml.limits import DEFAULT_LIMITS, Limits
from ..edxml.models import DSIG_NAMESPACE
from ..edxml.paths import SIGNATURE
from ..errors import ErrorCode, Issue, SignatureError
from .keys import DS, ED, ENVELOPED, EXC_C14N, HEADER_PATH
from .pki import PrivateKey


def sign(
    package: bytes | edxml.Package,
    key: PrivateKey,
    certificates: Sequence[x509.Certificate],
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> bytes:
    """Sign a package (edXML bytes or a model): enveloped XML-DSig, last in edXMLHeader,
    ``Reference URI=""``, exclusive C14N, RSA-SHA256 or ECDSA-SHA256 by the key's type."""
    if not certificates:
        raise ValueError("signing needs the signer's certificate")
    if isinstance(package, bytes):
        root = parse_untrusted(package, limits, keep_comments=True)
        edxml.read_tree(root, limits)  # sign only what the backbone could read
    else:
        root = edxml.to_tree(package)
    header = root.find("/".join(HEADER_PATH))
    assert header is not None
    if header.find(DS + "Signature") is not None or header.find(ED + "Signature") is not None:
        raise SignatureError(
            Issue.of(
                ErrorCode.MULTIPLE_SIGNATURES,
                SIGNATURE,
                "the package already carries a Signature; sign the unsigned package",
            )
        )
    _sign_tree(root, header, key, certificates)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _sign_tree(
    root: etree._Element,
    header: etree._Element,
    key: PrivateKey,
    certificates: Sequence[x509.Certificate],
) -> None:
    """Append the Signature to ``header``: what the verifier's fast path checks, built
    directly (exclusive C14N of the document, SHA-256, one key operation) rather than
    through signxml, which costs several times more per package."""
    digest = hashlib.sha256(  # before the Signature exists: what the enveloped transform leaves
        etree.tostring(root, method="c14n", exclusive=True, with_comments=False)
    ).digest()
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    method = SignatureMethod.ECDSA_SHA256 if is_ec else SignatureMethod.RSA_SHA256

    def child(
        parent: etree._Element, tag: str, text: str | None = None, **attributes: str
    ) -> etree._Element:
        element = etree.SubElement(parent, DS + tag, attributes)
        element.text = text
        return element

    signature = etree.SubElement(header, DS + "Signature", nsmap={"ds": DSIG_NAMESPACE})
    signed_info = child(signature, "SignedInfo")
    child(signed_info, "CanonicalizationMethod", Algorithm=EXC_C14N)
    child(signed_info, "SignatureMethod", Algorithm=method.value)
    reference = child(signed_info, "Reference", URI="")
    transforms = child(reference, "Transforms")
    child(transforms, "Transform", Algorithm=ENVELOPED)
    child(transforms, "Transform", Algorithm=EXC_C14N)
    child(reference, "DigestMethod", Algorithm=DigestAlgorithm.SHA256.value)
    child(reference, "DigestValue", base64.b64encode(digest).decode("ascii"))
    canonical = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s_ = decode_dss_signature(key.sign(canonical, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        value = r.to_bytes(size, "big") + s_.to_bytes(size, "big")
    else:
        value = key.sign(canonical, padding.PKCS1v15(), hashes.SHA256())
    child(signature, "SignatureValue", base64.b64encode(value).decode("ascii"))
    x509_data = child(child(signature, "KeyInfo"), "X509Data")
    for certificate in certificates:
        der = certificate.public_bytes(serialization.Encoding.DER)
        child(x509_data, "X509Certificate", base64.encodebytes(der).decode("ascii").strip())
