"""The signing commands end to end: pki init/issue/revoke, sign, validate --trust --crl."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from backbone import edxml, signing
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

    trust: list[str | Path] = [
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
    assert code == 2 and "cannot read the CA bundle" in stderr and "nope.pem" in stderr


# --- issue 13: bad input, key/certificate checks, no silent overwrite, our own words -------

H41 = "000.00.00.H41"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the bad-input table: a PKI (EC keys: fast), G22's and H41's keys and
    certificates, another PKI, damaged copies of the PKI, packages, a file and a folder."""
    t = tmp_path_factory.mktemp("world")
    (t / "file.txt").write_text("not a package, not a key, not a certificate\n")
    (t / "dir").mkdir()
    pki = signing.Pki(t / "pki")
    pki.init(key_type="ec")
    for code in (SENDER, H41):
        pki.issue(code, t / "certs", key_type="ec")
    other = signing.Pki(t / "other-pki")
    other.init(key_type="ec")
    other.issue(SENDER, t / "other", key_type="ec")
    damage = {
        "garbage-json": ("pki.json", "{not json"),
        "wrong-json": ("pki.json", '{"issuing": "root-ca", "revoked": [{"serial": 1}]}'),
        "garbage-key": ("root-ca.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n"),
        "garbage-cert": ("root-ca.pem", "garbage"),
    }
    for name, (file, text) in damage.items():
        shutil.copytree(t / "pki", t / name)
        (t / name / file).write_text(text)
    shutil.copytree(t / "pki", t / "no-key")
    (t / "no-key" / "root-ca.key").unlink()
    (t / "package.edxml").write_bytes(edxml.build(make_document()))
    key, cert = t / "certs" / f"{SENDER}.key", t / "certs" / f"{SENDER}.pem"
    signed = signing.sign(
        edxml.build(make_document()),
        signing.load_private_key(str(key)),
        signing.load_certificates(str(cert)),
    )
    (t / "signed.edxml").write_bytes(signed)
    return t


KEY, CERT = f"{{t}}/certs/{SENDER}.key", f"{{t}}/certs/{SENDER}.pem"
PACKAGE, SIGNER = "{t}/package.edxml", ("--key", KEY, "--cert", CERT)
FRESH = ("--out", "{t}/fresh")  # an --out that does not exist yet

# (arguments with {t} for the world folder, a part of the one error line)
BAD_INPUT = [
    (("sign", "{t}/missing", *SIGNER), "missing: cannot read"),
    (("sign", "{t}/dir", *SIGNER), "dir: cannot read"),
    (("sign", "{t}/file.txt", *SIGNER), "file.txt: not an unsigned edXML package"),
    (("sign", "{t}/signed.edxml", *SIGNER), "already carries a Signature"),
    (("sign", PACKAGE, "--key", "{t}/missing", "--cert", CERT), "missing: cannot read"),
    (("sign", PACKAGE, "--key", "{t}/file.txt", "--cert", CERT), "file.txt: not an unencrypted"),
    (("sign", PACKAGE, "--key", CERT, "--cert", CERT), ".pem: not an unencrypted PEM private"),
    (("sign", PACKAGE, "--key", KEY, "--cert", "{t}/file.txt"), "file.txt: not a PEM certificate"),
    (("sign", PACKAGE, "--key", KEY, "--cert", KEY), ".key: not a PEM certificate"),
    (("sign", PACKAGE, "--key", KEY, "--cert", "{t}/dir"), "dir: cannot read"),
    (("sign", PACKAGE, "--key", f"{{t}}/certs/{H41}.key", "--cert", CERT), "is not the key of"),
    (("sign", PACKAGE, *SIGNER, "--out", "{t}/missing/s.edxml"), "folder {t}/missing does not"),
    (("sign", PACKAGE, *SIGNER, "--out", "{t}/dir"), "dir: is a directory"),
    (("pki", "init", "{t}/file.txt"), "file.txt is a file"),
    (("pki", "init", "/proc/backbone-pki"), "/proc/backbone-pki: cannot create the PKI"),
    (("pki", "init", "{t}/new", "--days", "-5"), "--days"),
    (("pki", "init", "{t}/new", "--days", "0"), "--days"),
    (("pki", "init", "{t}/new", "--days", "99999999"), "--days"),
    (("pki", "init", "{t}/pki"), "already holds a PKI"),
    (("pki", "issue", SENDER, "--pki", "{t}/missing", *FRESH), "missing is not a PKI directory"),
    (("pki", "issue", SENDER, "--pki", "{t}/file.txt", *FRESH), "file.txt is not a PKI"),
    (("pki", "issue", SENDER, "--pki", "{t}/garbage-json", *FRESH), "pki.json: damaged"),
    (("pki", "issue", SENDER, "--pki", "{t}/wrong-json", *FRESH), "pki.json: damaged"),
    (("pki", "issue", SENDER, "--pki", "{t}/garbage-key", *FRESH), "root-ca.key: damaged"),
    (("pki", "issue", SENDER, "--pki", "{t}/garbage-cert", *FRESH), "root-ca.pem: not the cert"),
    (("pki", "issue", SENDER, "--pki", "{t}/no-key", *FRESH), "root-ca.key: cannot read"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--out", "{t}/file.txt"), "file.txt is a file"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--out", "/proc/x"), "/proc/x: cannot write"),
    (("pki", "issue", "G22", "--pki", "{t}/pki", *FRESH), "'G22'"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--days", "0", *FRESH), "--days"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--name", "x" * 65, *FRESH), "--name"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--name", "", *FRESH), "--name"),
    (("pki", "issue", SENDER, "--pki", "{t}/pki", "--out", "{t}/certs"), "--force"),
    (("pki", "revoke", CERT, "--pki", "{t}/missing"), "missing is not a PKI directory"),
    (("pki", "crl", "--pki", "{t}/missing"), "missing is not a PKI directory"),
    (("pki", "crl", "--pki", "{t}/garbage-key"), "root-ca.key: damaged"),
    (("pki", "crl", "--pki", "{t}/pki", "--days", "0"), "--days"),
    (("pki", "revoke", CERT, "--pki", "{t}/garbage-json"), "pki.json: damaged"),
    (("pki", "revoke", CERT, "--pki", "{t}/garbage-key"), "root-ca.key: damaged"),
    (("pki", "revoke", "{t}/missing", "--pki", "{t}/pki"), "missing: cannot read"),
    (("pki", "revoke", "{t}/dir", "--pki", "{t}/pki"), "dir: cannot read"),
    (("pki", "revoke", "{t}/file.txt", "--pki", "{t}/pki"), "file.txt: not a certificate"),
    (("pki", "revoke", KEY, "--pki", "{t}/pki"), ".key: not a certificate"),
    (
        ("pki", "revoke", f"{{t}}/other/{SENDER}.pem", "--pki", "{t}/pki"),
        "was not issued by the issuing CA",
    ),
]


def _bad_input_id(case: tuple[tuple[str, ...], str]) -> str:
    return " ".join((Path(a).name if "/" in a else a)[:20] for a in case[0])


@pytest.mark.parametrize(("args", "says"), BAD_INPUT, ids=map(_bad_input_id, BAD_INPUT))
def test_bad_input_says_one_error_line(world: Path, args: tuple[str, ...], says: str) -> None:
    """Point 24 and 27: one ``error:`` line that names the file or option and what it should
    be; no traceback, no library text (cryptography's URL, errno, exception names)."""
    before = sorted(p.relative_to(world) for p in world.rglob("*"))
    code, stdout, stderr = invoke(*(a.format(t=world) for a in args))
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert code != 0 and stdout == "", (code, stdout)
    assert len(errors) == 1 and len(stderr.splitlines()) == 1, stderr
    assert says.format(t=world) in errors[0]
    for library in ("Traceback", "unexpected", "https://", "Errno", "Error:", "Malformed"):
        assert library not in stderr, stderr
    assert sorted(p.relative_to(world) for p in world.rglob("*")) == before  # nothing written


def _issue(tmp_path: Path, *args: str | Path) -> tuple[int, str, str]:
    return invoke("pki", "issue", SENDER, "--pki", tmp_path / "pki", "--ec", *args)


@pytest.fixture
def small_pki(tmp_path: Path) -> Path:
    assert invoke("pki", "init", tmp_path / "pki", "--ec")[0] == 0
    return tmp_path / "pki"


def test_sign_refuses_a_key_that_is_not_the_certificate_s(world: Path, tmp_path: Path) -> None:
    """Point 25: the signature would never verify; say so instead of writing it."""
    other_key = world / "certs" / f"{H41}.key"
    target = tmp_path / "s.edxml"
    code, stdout, stderr = invoke(
        "sign", world / "package.edxml", "--key", other_key, "--cert", CERT.format(t=world),
        "--out", target,
    )  # fmt: skip
    assert code == 1 and stdout == ""
    assert (
        stderr == f"error: {other_key} is not the key of the certificate {CERT.format(t=world)}\n"
    )
    assert not target.exists()


@pytest.mark.parametrize(
    ("signer", "named"),
    [(H41, f"is for {H41}"), ("root-ca", "names no agency")],
)
def test_sign_warns_when_the_certificate_is_not_the_sender_s(
    world: Path, tmp_path: Path, signer: str, named: str
) -> None:
    """Point 25: a certificate of another agency (or of none) still signs, with one warning
    line naming both, since validators that bind certificates to agencies will refuse it."""
    folder = world / ("pki" if signer == "root-ca" else "certs")
    target = tmp_path / "s.edxml"
    code, stdout, stderr = invoke(
        "sign", world / "package.edxml", "--key", folder / f"{signer}.key",
        "--cert", folder / f"{signer}.pem", "--out", target,
    )  # fmt: skip
    assert code == 0 and stdout == f"signed {world / 'package.edxml'} -> {target}\n"
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the certificate "), stderr
    assert named in lines[0] and f"from {SENDER}" in lines[0]
    assert target.is_file()


def test_sign_of_the_sender_s_own_certificate_says_nothing_more(
    world: Path, tmp_path: Path
) -> None:
    code, _, stderr = invoke("sign", world / "package.edxml", *(a.format(t=world) for a in SIGNER),
                             "--out", tmp_path / "s.edxml")  # fmt: skip
    assert code == 0 and stderr == ""


def test_pki_issue_does_not_overwrite_without_force(tmp_path: Path, small_pki: Path) -> None:
    """Point 26: a second issue to the same folder would replace a key in use."""
    out = tmp_path / "certs"
    key, cert = out / f"{SENDER}.key", out / f"{SENDER}.pem"
    assert _issue(tmp_path, "--out", out)[0] == 0
    first = key.read_bytes(), cert.read_bytes()
    code, stdout, stderr = _issue(tmp_path, "--out", out)
    assert code == 1 and stdout == ""
    assert stderr == (
        f"error: {key} and {cert} already exist: give another --out, or --force to replace\n"
    )
    cert.unlink()
    code, _, stderr = _issue(tmp_path, "--out", out)  # the key alone is kept too
    assert code == 1 and f"error: {key} already exists:" in stderr
    assert key.read_bytes() == first[0] and not cert.exists()
    code, _, _ = _issue(tmp_path, "--out", out, "--force")
    assert code == 0 and key.read_bytes() != first[0] and cert.read_bytes() != first[1]


def test_repeated_revoke_changes_nothing(tmp_path: Path, small_pki: Path) -> None:
    """Point 26: revoking a revoked certificate again says so and rewrites nothing (a new
    CRL number for the same list would be churn for every validator reloading it)."""
    assert _issue(tmp_path, "--out", tmp_path / "certs")[0] == 0
    cert = tmp_path / "certs" / f"{SENDER}.pem"
    code, stdout, _ = invoke("pki", "revoke", cert, "--pki", small_pki)
    assert code == 0 and stdout.startswith("revoked serial ")
    serial = stdout.split()[2].rstrip(";")
    written = {p.name: p.read_bytes() for p in small_pki.iterdir()}
    code, stdout, stderr = invoke("pki", "revoke", cert, "--pki", small_pki)
    assert code == 0 and stderr == ""
    assert stdout == f"serial {serial} was revoked already; nothing changed\n"
    assert {p.name: p.read_bytes() for p in small_pki.iterdir()} == written


def test_pki_crl_signs_the_crls_again(tmp_path: Path) -> None:
    """A repeated revoke no longer re-signs the CRLs, so ``pki crl`` does, before they
    expire: a later next update and CRL number, the same revoked serials."""
    pki = tmp_path / "pki"
    assert invoke("pki", "init", pki, "--ec", "--intermediate")[0] == 0
    assert _issue(tmp_path, "--out", tmp_path / "certs")[0] == 0
    assert invoke("pki", "revoke", tmp_path / "certs" / f"{SENDER}.pem", "--pki", pki)[0] == 0
    before = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    code, stdout, stderr = invoke("pki", "crl", "--pki", pki, "--days", "30")
    assert code == 0 and stderr == ""
    assert stdout == (
        f"CRLs signed again: {pki / 'crl.pem'}, {pki / 'root-crl.pem'}; next update in 30 days\n"
    )
    after = x509.load_pem_x509_crl((pki / "crl.pem").read_bytes())
    number = x509.CRLNumber
    assert after.extensions.get_extension_for_class(number).value.crl_number == (
        before.extensions.get_extension_for_class(number).value.crl_number + 1
    )
    assert after.next_update_utc is not None and before.next_update_utc is not None
    assert after.next_update_utc - before.next_update_utc > timedelta(days=22)
    assert [r.serial_number for r in after] == [r.serial_number for r in before]


def test_a_revocation_the_pki_cannot_sign_is_not_recorded(tmp_path: Path) -> None:
    """A damaged root key makes revoke fail before pki.json says "revoked": the next try,
    once the key is back, still publishes the CRL instead of saying nothing changed."""
    pki = tmp_path / "pki"
    assert invoke("pki", "init", pki, "--ec", "--intermediate")[0] == 0
    assert _issue(tmp_path, "--out", tmp_path / "certs")[0] == 0
    cert = tmp_path / "certs" / f"{SENDER}.pem"
    root_key = (pki / "root-ca.key").read_bytes()
    (pki / "root-ca.key").write_text("garbage")
    state = (pki / "pki.json").read_bytes()
    code, _, stderr = invoke("pki", "revoke", cert, "--pki", pki)
    assert code == 1 and "root-ca.key: damaged" in stderr
    assert (pki / "pki.json").read_bytes() == state
    (pki / "root-ca.key").write_bytes(root_key)
    code, stdout, _ = invoke("pki", "revoke", cert, "--pki", pki)
    assert code == 0 and stdout.startswith("revoked serial ")


def test_help_is_plain_and_shows_defaults_and_bounds() -> None:
    """Point 27: bracketed defaults are text, not markup; the new option and the bounds show."""
    code, stdout, _ = invoke("pki", "issue", "-h")
    assert code == 0
    for shown in ("[BACKBONE_PKI_DIR]", "[the identifier]", "--force", "1<=x<=36500"):
        assert shown in stdout
    code, stdout, _ = invoke("sign", "-h")
    assert code == 0 and "[FILE.signed.edxml]" in stdout and "warns" in stdout
