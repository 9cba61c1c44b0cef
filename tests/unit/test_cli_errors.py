"""Every command with bad input says one line, ``error: ...``, and exits non-zero: never a
traceback, never a hang (each case runs as a process of its own, with a timeout).

Bad input here: missing files and folders, directories where files go, bad identifiers and
numbers, services that do not answer (port 1 refuses at once), malformed settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backbone import edxml, signing
from backbone.store import migrate

from ..conftest import make_document

NOWHERE_AMQP = "amqp://guest:guest@127.0.0.1:1/"
NOWHERE_MGMT = "http://guest:guest@127.0.0.1:1/"
NOWHERE_DB = "postgresql://backbone:s3cret-pw@127.0.0.1:1/backbone"
CODE = "000.00.00.G22"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    says: str  # a part of the error line: it names what was wrong
    env: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        settings = ",".join(f"{k.removeprefix('BACKBONE_')}" for k in self.env)
        return " ".join(self.args) + (f" [{settings}]" if settings else "")


def cases(tmp: Path) -> list[Case]:
    """The table: ``tmp`` holds a file, a directory and a PKI-less folder."""
    a_file, a_dir, missing = str(tmp / "file.txt"), str(tmp / "dir"), str(tmp / "missing")
    package = str(tmp / "package.edxml")
    trust_bundle = str(tmp / "ca-bundle.pem")
    trust = {"BACKBONE_TRUST_BUNDLE": trust_bundle}
    no_db = {"BACKBONE_DATABASE_URL": NOWHERE_DB}
    no_broker = {"BACKBONE_AMQP_URL": NOWHERE_AMQP, "BACKBONE_MGMT_URL": NOWHERE_MGMT}
    return [
        # offline commands: files, directories, identifiers, numbers
        Case(("validate", missing), "missing"),
        Case(("validate", a_dir), "dir"),
        Case(("validate", package, "--trust", a_file), "file.txt"),
        Case(("validate", package, "--trust", missing), "missing"),
        Case(("validate", package, "--trust", trust_bundle, "--crl", a_file), "file.txt"),
        Case(("sign", missing, "--key", a_file, "--cert", a_file), "missing"),
        Case(("sign", a_file, "--key", missing, "--cert", a_file), "missing"),
        Case(("sign", a_file, "--key", a_file, "--cert", a_file), "file.txt"),
        Case(("pki", "init", a_file), "file.txt"),
        Case(("pki", "init", str(tmp / "pki-a"), "--days", "-5"), "--days"),
        Case(("pki", "init", str(tmp / "pki-b"), "--days", "0"), "--days"),
        Case(("pki", "init", "/proc/backbone-pki"), "/proc/backbone-pki"),
        Case(("pki", "issue", CODE, "--pki", missing, "--out", a_dir), "missing"),
        Case(("pki", "issue", "000.00.00.G２２", "--pki", missing, "--out", a_dir), "G２２"),
        Case(("pki", "revoke", missing, "--pki", missing), "missing"),
        Case(("send", missing), "missing"),
        Case(("send", "--as", CODE, "--to", "nobody", "--subject", "s", "--unsigned"), "nobody"),
        Case(("receive", "--as", CODE, "--count", "0"), "--count"),
        Case(("receive", "--as", CODE, "--count", "-1"), "--count"),
        Case(("receive", "--as", CODE, "--timeout", "-1"), "--timeout"),
        Case(("receive", "--as", CODE, "--out", a_file), "file.txt"),
        Case(("report", "--under", "foo"), "foo"),
        Case(("report", "--until", "9999-12-31"), "9999-12-31"),
        Case(("report", "--since", "yesterday"), "yesterday"),
        Case(("access", "check", ""), "broker user"),
        Case(("agency", "add", " 000.00.00.H42 ", "--name", "x", "--no-principal"), "H42"),
        Case(("agency", "add", "000.00.00.H42", "--name", "x", "--cert", missing), "missing"),
        Case(("agency", "import", missing), "missing"),
        Case(("agency", "import", a_dir), "dir"),
        Case(("gateway", "add", "bad name", "--serves", "*.*.*.H41"), "bad name"),
        Case(("topology", "export", "--out", a_dir), "dir"),
        Case(("node", "env", "--dir", missing), "missing"),
        Case(("no-such-command",), "no-such-command"),
        Case(("agency", "list", "--level", "9"), "--level"),
        # services that do not answer
        Case(("status", "x"), "127.0.0.1", no_db),
        Case(("report",), "127.0.0.1", no_db),
        Case(("agency", "list"), "127.0.0.1", no_db),
        Case(("init",), "127.0.0.1", no_db),
        Case(("run", "all"), "broker", {**no_broker, **trust}),
        Case(("send", package, "--unsigned", "--url", "not a url"), "url"),
        Case(("send", package, "--unsigned"), "broker", no_broker),
        Case(("receive", "--as", CODE), "broker", no_broker),
        Case(("access", "check", CODE), "management", no_broker),
        Case(("topology", "export", "--out", str(tmp / "defs.json")), "management", no_broker),
        Case(("bench", "--amqp-url", NOWHERE_AMQP, "--mgmt-url", NOWHERE_MGMT), "management"),
        # malformed settings
        Case(("report",), "BACKBONE_DATABASE_URL", {"BACKBONE_DATABASE_URL": "garbage://"}),
        Case(("report",), "BACKBONE_CRL_FILES", {"BACKBONE_CRL_FILES": "[not json"}),
        Case(("report",), "BACKBONE_LOG_LEVEL", {"BACKBONE_LOG_LEVEL": "LOUD"}),
        Case(("report",), "BACKBONE_TIMEZONE", {"BACKBONE_TIMEZONE": "Mars/Olympus"}),
        Case(("report",), "BACKBONE_HOLIDAYS", {"BACKBONE_HOLIDAYS": "2026-13-45"}),
        Case(("status", "x"), "BACKBONE_MAX_PACKAGE_BYTES", {"BACKBONE_MAX_PACKAGE_BYTES": "-1"}),
    ]


@dataclass(frozen=True)
class Outcome:
    code: int | None  # None: it did not end within the timeout
    stdout: str
    stderr: str


def run(case: Case, cwd: Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKBONE_")}
    env.update({"BACKBONE_DATABASE_URL": f"sqlite:///{cwd / 'backbone.db'}", **case.env})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "backbone", *case.args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return Outcome(None, str(exc.stdout or ""), str(exc.stderr or ""))
    return Outcome(done.returncode, done.stdout, done.stderr)


def faults(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how the command failed; empty when it failed as it should."""
    if outcome.code is None:
        return ["it hung (no end within 60 s)"]
    found = []
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    if outcome.code == 0:
        found.append("exit status 0")
    if "Traceback" in outcome.stderr + outcome.stdout:
        found.append("a traceback")
    if len(errors) != 1:
        found.append(f"{len(errors)} 'error:' lines")
    elif case.says.lower() not in errors[0].lower():
        found.append(f"the error does not name {case.says!r}")
    if "s3cret-pw" in outcome.stderr + outcome.stdout:
        found.append("the database password was shown")
    if any(text in outcome.stderr for text in ("https://", "[Errno", "ParseError")):
        found.append("a library's own text")
    return found


def test_every_command_fails_with_one_line(tmp_path: Path, pki: signing.Pki) -> None:
    (tmp_path / "file.txt").write_text("not a package, not a key, not a certificate\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "package.edxml").write_bytes(edxml.build(make_document()))
    shutil.copy(pki.ca_bundle, tmp_path / "ca-bundle.pem")
    migrate.upgrade(f"sqlite:///{tmp_path / 'backbone.db'}")  # a database that answers
    table = cases(tmp_path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(lambda case: run(case, tmp_path), table))
    wrong = {
        case.id: (found, outcome.stderr.strip()[-300:])
        for case, outcome in zip(table, outcomes, strict=True)
        if (found := faults(case, outcome))
    }
    assert not wrong, "\n".join(f"{k}: {v[0]}\n    {v[1]}" for k, v in wrong.items())


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("error: the file is missing\n", []),
        ("Traceback (most recent call last):\nerror: missing\n", ["a traceback"]),
        ("error: one\nerror: two\n", ["2 'error:' lines"]),
        ("error: something else\n", ["the error does not name 'missing'"]),
    ],
)
def test_the_table_s_judge_catches_each_fault(stderr: str, expected: list[str]) -> None:
    assert faults(Case(("x",), "missing"), Outcome(1, "", stderr)) == expected
