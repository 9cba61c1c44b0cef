"""Shared fixtures: valid packages built by the project's own factory, and ../shared."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import settings

from backbone import edxml, signing
from backbone.edxml.factory import File, new_document, new_status

# CI runs the property tests on a fixed seed, so a red run can be replayed exactly.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

NOW = datetime(2026, 11, 23, 9, 30, 0)
SENDER = "000.00.00.G22"
RECIPIENTS = ("000.00.00.H41", "000.03.15.H41")


def make_document(**overrides: object) -> edxml.DocumentPackage:
    """A valid document package with one ~5 KB attachment (about 8 KB on the wire)."""
    fields: dict[str, object] = {
        "sender": SENDER,
        "recipients": RECIPIENTS,
        "subject": "V/v kết nối, liên thông phần mềm quản lý văn bản",
        "number": "7816",
        "notation": "VPCP-TTĐT",
        "files": [File("cong-van.pdf", bytes(range(256)) * 20, "application/pdf")],
        "now": NOW,
    }
    fields.update(overrides)
    return new_document(**fields)  # type: ignore[arg-type]


def make_status(code: str = "01", **overrides: object) -> edxml.StatusPackage:
    fields: dict[str, object] = {
        "reporter": RECIPIENTS[0],
        "document": make_document(),
        "status_code": code,
        "description": "Đã đến",
        "now": NOW,
    }
    fields.update(overrides)
    return new_status(**fields)  # type: ignore[arg-type]


@pytest.fixture
def document() -> edxml.DocumentPackage:
    return make_document()


@pytest.fixture
def document_bytes(document: edxml.DocumentPackage) -> bytes:
    return edxml.build(document)


@pytest.fixture
def status_bytes() -> bytes:
    return edxml.build(make_status())


SHARED = Path(os.environ.get("BACKBONE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    """The real packages of ../shared/interop: skipped in a user's clone, required in CI."""
    folder = SHARED / "interop" / "vdxp-sdk-samples"
    if not folder.is_dir():
        message = f"{folder} is absent: the interop samples live beside the project, in shared/"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so they must be there)")
        pytest.skip(message)
    return folder


# --- the signing layer: a development PKI made once per test session ---------------------


@dataclass(frozen=True)
class Signer:
    """An agency's key and certificate chain, as files and as objects."""

    code: str
    key_path: Path
    cert_path: Path
    fingerprint: str

    @property
    def key(self) -> signing.pki.PrivateKey:
        return signing.load_private_key(str(self.key_path))

    @property
    def certificates(self) -> list[x509.Certificate]:
        return signing.load_certificates(str(self.cert_path))

    def sign(self, data: bytes | edxml.Package) -> bytes:
        return signing.sign(data, self.key, self.certificates)


def _signer(issued: signing.pki.Issued) -> Signer:
    return Signer(issued.code, issued.key, issued.certificate, issued.fingerprint)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> signing.Pki:
    directory = tmp_path_factory.mktemp("pki")
    authority = signing.Pki(directory / "ca")
    authority.init(intermediate=True)
    return authority


@pytest.fixture(scope="session")
def signers(pki: signing.Pki) -> dict[str, Signer]:
    """Certificates for every case: good ones, and each way a certificate can be unfit."""
    out = pki.directory.parent / "agencies"
    now = datetime.now(UTC)
    made = {
        "G22": pki.issue(SENDER, out / "g22"),
        "G22-rotated": pki.issue(SENDER, out / "g22-rotated"),
        "H41": pki.issue(RECIPIENTS[0], out / "h41"),
        "G22-ec": pki.issue(SENDER, out / "g22-ec", key_type="ec"),
        "expired": pki.issue(SENDER, out / "expired", valid_from=now - timedelta(days=400)),
        "future": pki.issue(SENDER, out / "future", valid_from=now + timedelta(days=10)),
        "revoked": pki.issue(SENDER, out / "revoked"),
        "no-signing": pki.issue(SENDER, out / "no-signing", key_usage_signature=False),
    }
    pki.revoke(made["revoked"].certificate)
    other = signing.Pki(pki.directory.parent / "other-ca")
    other.init()
    made["other-ca"] = other.issue(SENDER, out / "other")
    return {name: _signer(issued) for name, issued in made.items()}


@pytest.fixture(scope="session")
def trust(pki: signing.Pki, signers: dict[str, Signer]) -> signing.TrustStore:
    return signing.TrustStore.from_files(pki.ca_bundle, pki.crls())


@pytest.fixture(params=["fast", "signxml"])
def verifier(request: pytest.FixtureRequest, trust: signing.TrustStore) -> signing.Verifier:
    """The same tests run on both verification engines."""
    return signing.Verifier(trust, signing.SubjectBinding(), engine=request.param)
