"""What signing and verifying share: loading keys and certificates, and where the
enveloped signature of an edXML package sits and which transforms it names."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..edxml.models import DSIG_NAMESPACE, NAMESPACE
from .pki import PrivateKey

DS = f"{{{DSIG_NAMESPACE}}}"
ED = f"{{{NAMESPACE}}}"
HEADER_PATH = (f"{ED}edXMLEnvelope", f"{ED}edXMLHeader")

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"


def load_private_key(path: str, password: bytes | None = None) -> PrivateKey:
    """A PEM private key (RSA or EC) from a file, with a clear error otherwise."""
    with open(path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=password)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: only RSA and EC keys can sign packages")
    return key


def load_certificates(path: str) -> list[x509.Certificate]:
    """The signer's certificate and its chain (PEM, signer first)."""
    with open(path, "rb") as handle:
        certificates = x509.load_pem_x509_certificates(handle.read())
    return certificates
