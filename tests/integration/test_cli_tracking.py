"""`backbone status` and `backbone report` as an operator runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbone.cli import app
from backbone.config import get_settings
from backbone.store import Store

from ..databases import migrated
from .test_report import LEVEL1, load

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with migrated("sqlite", tmp_path) as url:
        store = Store(url)

        async def fill() -> None:
            await load(store)
            await store.close()

        asyncio.run(fill())
        monkeypatch.setenv("BACKBONE_DATABASE_URL", url)
        get_settings.cache_clear()
        yield url
        get_settings.cache_clear()


def _document_id(url: str) -> str:
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return str(
            db.execute(
                "SELECT document_id FROM documents WHERE document_id LIKE 'report-1-%'"
            ).fetchone()[0]
        )


def test_status_shows_every_recipient_and_its_timeline(loaded: str) -> None:
    document_id = _document_id(loaded)
    result = runner.invoke(app, ["status", document_id, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["document_id"] == document_id and len(found["recipients"]) == 99
    first = next(r for r in found["recipients"] if r["recipient"] == LEVEL1[0])
    assert first["status"] == "06"
    assert [e["status"] for e in first["timeline"]] == ["01", "03", "04", "05", "06"]
    # times with their zone (BACKBONE_TIMEZONE, Asia/Ho_Chi_Minh by default), to the second
    assert found["accepted_at"].endswith("+07:00")
    assert all(e["recorded_at"].endswith("+07:00") for e in first["timeline"])
    table = runner.invoke(app, ["status", document_id])
    assert table.exit_code == 0 and "current status 06" in table.stdout
    missing = runner.invoke(app, ["status", "no-such-document"])
    assert missing.exit_code == 1 and "no document" in missing.stderr


def test_report_in_every_format(loaded: str) -> None:
    period = ["--since", "2020-01-01", "--until", "2020-01-31"]
    as_json = runner.invoke(app, ["report", *period, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    figures = json.loads(as_json.stdout)
    assert figures["answering"] == {"5+": 52, "3-4": 30, "1-2": 5, "none": 12}
    as_csv = runner.invoke(app, ["report", *period, "--format", "csv"])
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["figure", "key", "value"] and ["late documents", "count", "2"] in rows
    table = runner.invoke(app, ["report", *period])
    assert table.exit_code == 0 and "agencies answering" in table.stdout
    bad = runner.invoke(app, ["report", "--since", "yesterday"])
    assert bad.exit_code == 1 and "YYYY-MM-DD" in bad.stderr
