"""The ``backbone`` command: validate's output and exit status, demo, help on every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbone.cli import app

from ..conftest import make_document

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path, document_bytes: bytes, status_bytes: bytes) -> dict[str, Path]:
    paths = {
        "document": tmp_path / "doc.edxml",
        "status": tmp_path / "status.edxml",
        "invalid": tmp_path / "bad.edxml",
    }
    paths["document"].write_bytes(document_bytes)
    paths["status"].write_bytes(status_bytes)
    paths["invalid"].write_bytes(document_bytes.replace(b"000.00.00.H41", b"vxp.saas.03"))
    return paths


def test_validate_valid_packages_prints_one_line_each(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["document"]), str(files["status"])])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    document = make_document()
    assert lines[0] == (
        f"{files['document']}: valid edoc from 000.00.00.G22 to 000.00.00.H41, 000.03.15.H41 "
        f"document {document.document_id} attachments 1 (5120 bytes)"
    )
    assert lines[1].startswith(f"{files['status']}: valid status 01 (arrived) from 000.00.00.H41")


def test_validate_invalid_package_exits_1_with_reason_on_stderr(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["validate", str(files["document"]), str(files["invalid"])])
    assert result.exit_code == 1
    assert "valid edoc" in result.stdout and "bad.edxml" not in result.stdout
    assert f"{files['invalid']}: invalid: [bad-agency-id]" in result.stderr
    assert "To[1]/OrganId" in result.stderr and "'vxp.saas.03'" in result.stderr


def test_validate_unreadable_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "missing.edxml")])
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_validate_honours_the_size_limit(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbone.config import get_settings

    monkeypatch.setenv("BACKBONE_MAX_PACKAGE_BYTES", "1000")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["validate", str(files["document"])])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "[too-large]" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["validate"],
        ["demo"],
        ["sign"],
        ["pki"],
        ["init"],
        ["agency"],
        ["gateway"],
        ["send"],
        ["receive"],
        ["run"],
        ["run", "validator"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_the_console_script_runs(files: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backbone", "validate", str(files["invalid"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "bad-agency-id" in result.stderr


def test_service_logs_are_json_lines_with_document_and_agency() -> None:
    code = (
        "from backbone.logs import configure, get_logger\n"
        "configure('json')\n"
        "get_logger('validator').info('accepted', document_id='d-1', agency='000.00.00.H41')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    import json

    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["event"] == "accepted" and line["level"] == "info"
    assert line["document_id"] == "d-1" and line["agency"] == "000.00.00.H41"
    assert "timestamp" in line


@pytest.mark.parametrize("command", [["run", "validator"], ["run", "tracker"], ["run", "all"]])
def test_the_workers_refuse_guest_on_another_host(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from backbone.config import get_settings

    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://guest:guest@broker.example.gov/")
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, command)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "would connect to broker.example.gov as guest" in result.stderr
