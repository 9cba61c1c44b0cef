"""init, agency and gateway commands against a SQLite file, as a user runs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbone.cli import app
from backbone.config import get_settings

from ..conftest import Signer

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "backbone.db"
    monkeypatch.setenv("BACKBONE_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # no broker here
    monkeypatch.setenv("BACKBONE_MGMT_URL", "http://guest:guest@127.0.0.1:1/")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_commands_before_init_say_what_to_do(database: Path) -> None:
    code, _, stderr = invoke("agency", "list")
    assert code == 1 and "run `backbone init`" in stderr


def test_agency_and_gateway_commands(
    database: Path, signers: dict[str, Signer], tmp_path: Path
) -> None:
    assert invoke("init", "--no-broker")[0] == 0
    assert invoke("init", "--no-broker")[0] == 0  # again: nothing to do, no error
    code, _, stderr = invoke("init")
    assert code == 1 and "the broker is unreachable" in stderr  # the database part was done
    code, stdout, stderr = invoke("agency", "add", "000.00.00.H41", "--name", "UBND Tỉnh Nghệ An")
    assert "000.00.00.H41 registered" in stdout  # the registry part is done...
    assert code == 1 and "broker access for 000.00.00.H41 not provisioned" in stderr  # ...not this
    assert "run the same command again" in stderr
    code, stdout, _ = invoke(
        "agency",
        "add",
        "000.00.15.H41",
        "--name",
        "Sở TT&TT",
        "--parent",
        "000.00.00.H41",
        "--no-principal",
    )
    assert code == 0
    code, stdout, _ = invoke(
        "agency",
        "add",
        "000.00.00.G22",
        "--name",
        "VPCP",
        "--cert",
        signers["G22"].cert_path,
        "--no-principal",
    )
    assert code == 0 and "1 certificate" in stdout
    code, stdout, _ = invoke("agency", "list", "--json", "--under", "000.00.00.H41")
    assert [json.loads(line)["code"] for line in stdout.splitlines()] == ["000.00.15.H41"]
    code, stdout, _ = invoke("agency", "list", "--level", "1")
    assert "000.00.00.G22" in stdout and "000.00.15.H41" not in stdout
    code, stdout, stderr = invoke("agency", "remove", "000.00.15.H41")
    assert "000.00.15.H41 deactivated" in stdout
    assert code == 1 and "broker access of 000.00.15.H41 not revoked" in stderr
    assert "000.00.15.H41" not in invoke("agency", "list")[1]
    assert "000.00.15.H41" in invoke("agency", "list", "--all")[1]
    code, _, stderr = invoke("agency", "remove", "000.00.99.H41")
    assert code == 1 and "is not registered" in stderr

    code, _, stderr = invoke("gateway", "add", "lgsp-h41", "--serves", "*.*.*.H41")
    assert code == 1 and "broker access for lgsp-h41 not provisioned" in stderr
    code, stdout, _ = invoke("gateway", "list")
    assert "lgsp-h41" in stdout and "*.*.*.H41" in stdout
    code, _, stderr = invoke("gateway", "add", "bad", "--serves", "H41")
    assert code == 1 and "not an agency pattern" in stderr

    csv = tmp_path / "agencies.csv"
    csv.write_text(
        "code,name,parent\n000.00.16.H41,Sở 16,000.00.00.H41\nnull,Bad,\n", encoding="utf-8"
    )
    code, stdout, stderr = invoke("agency", "import", csv)
    assert code == 1
    assert "1 added, 0 updated, 0 unchanged, 1 refused" in stdout
    assert f"{csv}:3: refused:" in stderr
