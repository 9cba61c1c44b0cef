"""The signing commands end to end: pki init/issue/revoke, sign, validate --trust --crl."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from backbone import edxml
from backbone.cli import app

from ..conftest import SENDER, make_document

runner = CliRunner()


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_pki_sign_validate_revoke(tmp_path: Path) -> None:
    pki, out = tmp_path / "pki", tmp_path / "certs"
    code, stdout, _ = invoke("pki", "init", pki, "--intermediate")
    assert code == 0 and "trust anchor" in stdout
    code, stdout, _ = invoke("pki", "issue", SENDER, "--out", out, "--pki", pki, "--name", "VPCP")
    assert code == 0 and "sha256 fingerprint" in stdout
    key, cert = out / f"{SENDER}.key", out / f"{SENDER}.pem"
    assert key.stat().st_mode & 0o777 == 0o600

    unsigned = tmp_path / "letter.edxml"
    unsigned.write_bytes(edxml.build(make_document()))
    code, stdout, _ = invoke(
        "sign", unsigned, "--key", key, "--cert", cert, "--out", tmp_path / "s.edxml"
    )
    assert code == 0, stdout
    signed = tmp_path / "s.edxml"

    trust = [
        "--trust",
        pki / "ca-bundle.pem",
        "--crl",
        pki / "crl.pem",
        "--crl",
        pki / "root-crl.pem",
    ]
    code, stdout, stderr = invoke("validate", signed, *trust)
    assert code == 0, stderr
    assert f"signed by CN=VPCP,UID={SENDER}" in stdout

    code, _, stderr = invoke("validate", unsigned, *trust)
    assert code == 1 and "[unsigned]" in stderr

    code, stdout, _ = invoke("pki", "revoke", cert, "--pki", pki)
    assert code == 0 and "revoked serial" in stdout
    code, _, stderr = invoke("validate", signed, *trust)
    assert code == 1 and "[certificate-revoked]" in stderr


def test_validate_with_another_ca_says_untrusted(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert invoke("pki", "init", tmp_path / name)[0] == 0
    invoke("pki", "issue", SENDER, "--out", tmp_path / "certs", "--pki", tmp_path / "a")
    unsigned = tmp_path / "letter.edxml"
    unsigned.write_bytes(edxml.build(make_document()))
    certs = tmp_path / "certs"
    invoke("sign", unsigned, "--key", certs / f"{SENDER}.key", "--cert", certs / f"{SENDER}.pem")
    signed = tmp_path / "letter.signed.edxml"
    code, _, stderr = invoke("validate", signed, "--trust", tmp_path / "b" / "ca-bundle.pem")
    assert code == 1 and "[untrusted-chain]" in stderr


def test_clear_errors_for_bad_use(tmp_path: Path) -> None:
    assert invoke("pki", "init", tmp_path / "pki")[0] == 0
    code, _, stderr = invoke("pki", "init", tmp_path / "pki")
    assert code == 1 and "already holds a PKI" in stderr
    code, _, stderr = invoke(
        "pki", "issue", "vxp.saas.03", "--out", tmp_path, "--pki", tmp_path / "pki"
    )
    assert code == 1 and "not an agency identifier" in stderr
    code, _, stderr = invoke("pki", "issue", SENDER, "--out", tmp_path, "--pki", tmp_path / "none")
    assert code == 1 and "is not a PKI directory" in stderr
    code, _, stderr = invoke("sign", tmp_path / "missing.edxml", "--key", "k", "--cert", "c")
    assert code == 1 and "cannot read" in stderr
    code, _, stderr = invoke("validate", tmp_path / "x.edxml", "--trust", tmp_path / "nope.pem")
    assert code == 2 and "cannot use the CA bundle" in stderr
