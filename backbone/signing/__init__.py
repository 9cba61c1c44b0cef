"""The signing layer: sign packages, verify untrusted ones, trust anchors and revocation.

    sign(package, key, certificates) -> bytes      enveloped XML-DSig, RSA/ECDSA-SHA256
    Verifier(trust, binding).verify(data) -> Verified
    TrustStore.from_files(ca_bundle, crls)         anchors + CRLs, validated chains cached
    FingerprintBinding / SubjectBinding / AnyBinding   certificate -> sending agency
    CertificateBinding(mode, subject, registry).binds(verified, agency)   the validator's

Every refusal is a :class:`backbone.errors.SignatureError` (a PackageError) with its code.
"""

from .binding import (
    AnyBinding,
    Binding,
    CertificateBinding,
    FingerprintBinding,
    SubjectBinding,
    attribute_oid,
)
from .keys import load_certificates, load_private_key
from .pki import Pki, PkiError, fingerprint
from .sign import sign
from .trust import TrustedChain, TrustStore
from .verify import Verified, Verifier, wrong_agency

__all__ = [
    "AnyBinding",
    "Binding",
    "CertificateBinding",
    "FingerprintBinding",
    "Pki",
    "PkiError",
    "SubjectBinding",
    "TrustStore",
    "TrustedChain",
    "Verified",
    "Verifier",
    "attribute_oid",
    "fingerprint",
    "load_certificates",
    "load_private_key",
    "sign",
    "wrong_agency",
]
