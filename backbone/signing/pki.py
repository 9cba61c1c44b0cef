"""A development PKI: a root CA (optionally an intermediate), agency certificates, a CRL.

For demos, tests and pilots only: keys are written unencrypted. Production agencies use
certificates from the government CA, configured as the trust bundle and CRLs.

Layout of a PKI directory::

    root-ca.pem  root-ca.key            the trust anchor (also copied to ca-bundle.pem)
    intermediate-ca.pem/.key            when made with an intermediate: it issues agencies
    crl.pem                             the issuing CA's CRL (root-crl.pem for the root too)
    pki.json                            which CA issues, revoked serials, CRL number
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..agency import AgencyCode
from ..errors import BackboneError

KeyType = Literal["rsa", "ec"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
AGENCY_ATTRIBUTE = NameOID.USER_ID  # where the agency identifier stands in the subject
_SKEW = timedelta(minutes=5)


class PkiError(BackboneError):
    """The PKI directory is missing, incomplete, or asked to do something it cannot."""


@dataclass(frozen=True, slots=True)
class Issued:
    code: str
    certificate: Path  # leaf then intermediates, PEM
    key: Path
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Revocation:
    """What a revocation did: the CLI says "nothing changed" for a repeated one."""

    serial: int
    changed: bool  # False: it was revoked already, nothing was written


def new_key(kind: KeyType = "rsa") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    os.chmod(path, 0o600)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex: how certificates are registered."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage with only the named usages set."""
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


def _ca_certificate(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    path_length: int | None,
    days: int,
) -> x509.Certificate:
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        if issuer is not None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _name(common_name: str, unit: str | None = None, agency: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Backbone development PKI"),
    ]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    if agency:
        attributes.append(x509.NameAttribute(AGENCY_ATTRIBUTE, agency))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class Pki:
    """A development PKI on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def _state_path(self) -> Path:
        return self.directory / "pki.json"

    def _state(self) -> dict[str, object]:
        if not self._state_path.is_file():
            raise PkiError(f"{self.directory} is not a PKI directory (run `backbone pki init`)")
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise PkiError(f"{self._state_path}: cannot read: {exc.strerror or exc}") from None
        except ValueError:
            raise PkiError(f"{self._state_path}: damaged, not the JSON `pki init` writes") from None
        if not _valid_state(state):
            raise PkiError(f"{self._state_path}: damaged, not the state `pki init` writes")
        return dict(state)

    def _save(self, state: dict[str, object]) -> None:
        self._state_path.write_text(json.dumps(state, indent=2))

    @property
    def ca_bundle(self) -> Path:
        return self.directory / "ca-bundle.pem"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"

    def crls(self) -> list[Path]:
        """Every CRL this PKI publishes: the issuing CA's, and the root's above it."""
        return [p for p in (self.crl, self.directory / "root-crl.pem") if p.is_file()]

    def init(
        self, *, intermediate: bool = False, key_type: KeyType = "rsa", days: int = 3650
    ) -> None:
        """Create the CAs and an empty CRL; refuse to overwrite an existing PKI."""
        if self.directory.exists() and not self.directory.is_dir():
            raise PkiError(f"{self.directory} is a file: give a folder for the PKI")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._state_path.exists():
            raise PkiError(f"{self.directory} already holds a PKI")
        root_key = new_key(key_type)
        root = _ca_certificate(_name("Backbone Dev Root CA"), root_key, None, root_key, None, days)
        _write_key(self.directory / "root-ca.key", root_key)
        (self.directory / "root-ca.pem").write_bytes(_pem(root))
        self.ca_bundle.write_bytes(_pem(root))
        issuing = "root-ca"
        if intermediate:
            key = new_key(key_type)
            cert = _ca_certificate(_name("Backbone Dev Issuing CA"), key, root, root_key, 0, days)
            _write_key(self.directory / "intermediate-ca.key", key)
            (self.directory / "intermediate-ca.pem").write_bytes(_pem(cert))
            issuing = "intermediate-ca"
        self._save({"issuing": issuing, "revoked": [], "crl_number": 0})
        self.write_crls()

    def _load_ca(self, name: str) -> tuple[x509.Certificate, PrivateKey]:
        """A CA of this PKI; a missing or damaged file is named, in our words."""
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert = _read_certificate(cert_path, f"the certificate of the PKI's {name}")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except OSError as exc:
            raise PkiError(f"{key_path}: cannot read: {exc.strerror or exc}") from None
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise PkiError(f"{key_path}: damaged, not the PEM key of the PKI's {name}")
        return cert, key

    def issuer(self) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
        """The issuing CA, its key, and the chain to append to agency certificates."""
        name = str(self._state()["issuing"])
        cert, key = self._load_ca(name)
        return cert, key, ([cert] if name == "intermediate-ca" else [])

    def issue(
        self,
        code: str,
        out: Path,
        *,
        name: str | None = None,
        key_type: KeyType = "rsa",
        days: int = 365,
        valid_from: datetime | None = None,
        key_usage_signature: bool = True,
    ) -> Issued:
        """An agency certificate: the identifier in the subject (UID), digitalSignature set."""
        AgencyCode.parse(code)
        ca, ca_key, chain = self.issuer()
        key = new_key(key_type)
        start = valid_from or datetime.now(UTC) - _SKEW
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name or code, "Agency", code))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, content_commitment=True)
                if key_usage_signature
                else _key_usage(key_encipherment=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        out.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = out / f"{code}.key", out / f"{code}.pem"
        _write_key(key_path, key)
        cert_path.write_bytes(_pem(certificate, *chain))
        return Issued(code, cert_path, key_path, fingerprint(certificate))

    def revoke(self, certificate_path: Path, *, crl_days: int = 7) -> Revocation:
        """Revoke a certificate this PKI issued and rewrite the CRL; a certificate revoked
        already changes nothing (no new CRL number for the same list)."""
        certificate = _read_certificate(Path(certificate_path), "a certificate")
        ca, _, _ = self.issuer()
        try:  # the signature, not only the name: every development PKI has the same names
            certificate.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(
                f"{certificate_path} was not issued by the issuing CA of {self.directory}"
            ) from None
        state = self._state()
        revoked = list(state["revoked"])  # type: ignore[call-overload]
        serial = certificate.serial_number
        if any(entry["serial"] == serial for entry in revoked):
            return Revocation(serial, changed=False)
        revoked.append({"serial": serial, "at": datetime.now(UTC).isoformat()})
        self._publish({**state, "revoked": revoked}, crl_days)
        return Revocation(serial, changed=True)

    def write_crls(self, *, days: int = 7) -> None:
        """(Re)sign the CRLs: the issuing CA's with every revoked serial; the root's empty."""
        self._publish(self._state(), days)

    def _publish(self, state: dict[str, object], days: int) -> None:
        """Sign the CRLs of ``state`` before writing anything (a damaged CA changes no
        file), then the CRLs, then the state: a revocation is never recorded unpublished."""
        number = int(state["crl_number"]) + 1  # type: ignore[call-overload]
        ca, key, _ = self.issuer()
        revoked = [
            (int(e["serial"]), datetime.fromisoformat(e["at"]))
            for e in state["revoked"]  # type: ignore[attr-defined]
        ]
        crls = {self.crl: _crl(ca, key, revoked, number, days)}
        if state["issuing"] == "intermediate-ca":
            root, root_key = self._load_ca("root-ca")
            crls[self.directory / "root-crl.pem"] = _crl(root, root_key, [], number, days)
        for path, crl in crls.items():
            path.write_bytes(crl)
        self._save({**state, "crl_number": number})


def _valid_state(state: object) -> bool:
    """Whether ``state`` has the shape :meth:`Pki.init` writes (pki.json can be edited)."""
    if not isinstance(state, dict) or state.get("issuing") not in ("root-ca", "intermediate-ca"):
        return False
    number, revoked = state.get("crl_number"), state.get("revoked")
    if not isinstance(number, int) or number < 0 or not isinstance(revoked, list):
        return False
    for entry in revoked:
        if not isinstance(entry, dict) or not isinstance(entry.get("serial"), int):
            return False
        try:
            datetime.fromisoformat(entry["at"])
        except (KeyError, TypeError, ValueError):
            return False
    return True


def _read_certificate(path: Path, what: str) -> x509.Certificate:
    """The first certificate of a PEM file, or a :class:`PkiError` naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PkiError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise PkiError(f"{path}: not {what} (PEM, BEGIN CERTIFICATE)") from None


def _crl(
    ca: x509.Certificate,
    key: PrivateKey,
    revoked: list[tuple[int, datetime]],
    number: int,
    days: int,
    *,
    now: datetime | None = None,
) -> bytes:
    now = now or datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - _SKEW)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
