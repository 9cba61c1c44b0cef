"""``backbone bench parts`` with tiny numbers, so the part benchmarks cannot rot: each runs,
prints its figures and saves its JSON. (The tracker's needs a broker: tests/pipeline.)
Speed is for `make bench-parts` to print, never for a test to assert."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from backbone.benchmark._report import percentiles
from backbone.benchmark.parts import signing
from backbone.cli import app

runner = CliRunner()


def test_the_local_parts_run_and_save_their_figures(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "parts",
            "parse",
            "signing",
            "agencies",
            "--iterations",
            "3",
            "--seconds",
            "0",
            "--departments",
            "1",
            "--database",
            "sqlite",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agencies.json",
        "parse.json",
        "signing.json",
    ]
    for name in ("parse", "signing", "agencies"):
        assert f"saved {tmp_path / name}.json" in result.output

    parse = json.loads((tmp_path / "parse.json").read_text())
    assert parse["iterations"] == 3 and 7000 < parse["package_bytes"] < 9000
    assert all(f["per_second"] > 0 for f in parse["stages"].values())
    assert "edXML format layer" in result.output

    figures = json.loads((tmp_path / "signing.json").read_text())
    assert len(figures["results"]) == len(signing.SIZES)
    assert all(f["runs"] >= 20 for row in figures["results"].values() for f in row.values())
    outcomes = [row["outcome"] for row in figures["namespaces"].values()]
    assert outcomes[:2] == ["verified", "verified"] and outcomes[2].startswith("refused")
    assert "declarations refused in" in result.output

    imported = json.loads((tmp_path / "agencies.json").read_text())
    assert imported["agencies"] == 1 + 401
    assert list(imported["results"]) == ["sqlite"]
    assert imported["results"]["sqlite"]["agencies"] == 402


def test_an_unknown_part_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "parts", "parse", "nothing", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: no part 'nothing': give parse, signing, agencies, tracker"
    )
    assert not any(tmp_path.iterdir())


def test_percentiles_never_pass_the_maximum() -> None:
    # two equal largest values: the interpolated p99 once came out one rounding error above them
    top = 118.58975963064947
    figures = percentiles([60.0 + n for n in range(22)] + [top, top])
    assert figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"] == top
