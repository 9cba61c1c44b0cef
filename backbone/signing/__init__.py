"""The signing layer: sign packages, verify untrusted ones, trust anchors and revocation.

    sign(package, key, certificates) -> bytes      enveloped XML-DSig, RSA/ECDSA-SHA256
    Verifier(trust, binding).verify(data) -> Verified
    TrustStore.from_files(ca_bundle, crls)         anchors + CRLs, validated chains cached
    FingerprintBinding / SubjectBinding / AnyBinding   certificate -> sending agency

Every refusal is a :class:`backbone.errors.SignatureError` (a PackageError) with its code.
"""

from .binding import AnyBinding, Binding, FingerprintBinding, SubjectBinding, attribute_oid
from .pki import Pki, PkiError, fingerprint
from .trust import TrustedChain, TrustStore
from .xmldsig import (
    Verified,
    Verifier,
    load_certificates,
    load_private_key,
    sign,
    wrong_agency,
)

__all__ = [
    "AnyBinding",
    "Binding",
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
