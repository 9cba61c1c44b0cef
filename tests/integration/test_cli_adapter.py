"""`backbone adapter credentials ...` against a SQLite file, as an operator runs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.http import credentials
from adapters.http.credentials import KEY_ENV, Vault
from backbone.cli import app
from backbone.config import get_settings
from backbone.store import Store

pytestmark = pytest.mark.integration
runner = CliRunner()
H41 = "000.00.00.H41"


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'backbone.db'}"
    monkeypatch.setenv("BACKBONE_DATABASE_URL", url)
    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # no broker here
    monkeypatch.setenv(KEY_ENV, Vault.new_key())
    get_settings.cache_clear()
    assert runner.invoke(app, ["init", "--no-broker"]).exit_code == 0
    yield url
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def secret_of(url: str, key_id: str) -> bytes | None:
    async def read() -> bytes | None:
        store = Store(url)
        try:
            async with store.sessions() as session:
                found = await credentials.active(session, Vault.from_environment(), key_id)
        finally:
            await store.close()
        return None if found is None else found.secret

    return asyncio.run(read())


def test_add_list_rotate_revoke(database: str) -> None:
    code, out, _ = invoke("adapter", "credentials", "add", "--agency", H41, "--label", "DMS H41")
    assert code == 0
    key_id = out.split("key id: ")[1].split()[0]
    secret = out.split("secret: ")[1].split()[0]
    assert secret_of(database, key_id) == secret.encode()  # sealed, and opened with the key

    code, out, _ = invoke("adapter", "credentials", "list")
    assert code == 0 and key_id in out and H41 in out and secret not in out

    code, out, _ = invoke("adapter", "credentials", "rotate", key_id)
    rotated = out.split("secret: ")[1].split()[0]
    assert code == 0 and rotated != secret and secret_of(database, key_id) == rotated.encode()

    assert invoke("adapter", "credentials", "revoke", key_id)[:2] == (0, f"revoked {key_id}\n")
    assert secret_of(database, key_id) is None  # no longer active
    assert "revoked already" in invoke("adapter", "credentials", "revoke", key_id)[1]
    code, _, err = invoke("adapter", "credentials", "rotate", key_id)
    assert code == 1 and err.startswith("error: ") and "revoked" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["add"], "--agency"),
        (["add", "--agency", "H41"], "H41"),
        (["revoke", "dms-nothing"], "no credential"),
        (["rotate", "dms-nothing"], "no credential"),
    ],
)
def test_mistakes_are_one_error_line(database: str, args: list[str], said: str) -> None:
    code, _, err = invoke("adapter", "credentials", *args)
    assert code != 0 and err.startswith("error: ") and said in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_without_the_adapters_key_nothing_is_written(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    code, _, err = invoke("adapter", "credentials", "add", "--agency", H41)
    assert code == 1 and KEY_ENV in err and "credentials key" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--as", H41, "--gateway", "lgsp"], "one of the two"),
        ([], "one of the two"),
        (["--as", "000.00.00.h41"], "--as:"),
        (["--gateway", "no spaces"], "is not a gateway name"),
        (["--as", H41, "--key", "k.pem"], "both --key and --cert"),
        (["--as", H41], "password: give --password-file or set BACKBONE_ADAPTER_PASSWORD"),
    ],
)
def test_the_folder_adapter_says_what_is_wrong_with_its_options(
    args: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKBONE_ADAPTER_PASSWORD", raising=False)
    code, out, err = invoke("adapter", "folder", "--root", str(tmp_path / "root"), *args)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and said in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_folder_adapter_says_when_the_broker_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKBONE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")  # nothing there
    monkeypatch.setenv("BACKBONE_ADAPTER_PASSWORD", "secret")
    get_settings.cache_clear()
    try:
        code, _, err = invoke("adapter", "folder", "--root", str(tmp_path / "root"), "--as", H41)
    finally:
        get_settings.cache_clear()
    assert code != 0 and err.startswith(f"error: cannot reach the broker amqp://{H41}:***@")
    assert "secret" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "root" / "outbox").is_dir()  # its folders made first
