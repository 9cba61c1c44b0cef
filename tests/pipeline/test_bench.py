"""The end-to-end benchmark and the tracker's part, run with tiny numbers so they cannot rot:
they complete and their reports hold sane figures. (Speed is for `make bench` and `make
bench-parts` to print, never for a test to assert.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backbone import benchmark
from backbone.cli import app

from .conftest import Broker

pytestmark = pytest.mark.pipeline


def _ordered(figures: dict[str, float]) -> bool:
    return 0 < figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]


def test_the_benchmark_runs_end_to_end_and_reports_sane_figures(tmp_path: Path) -> None:
    # no URLs: it starts a private node of its own, as `make bench` does on a fresh machine,
    # and so can count the broker's CPU (its process group) in the server's share
    options = benchmark.Options(
        count=12, warm_up=4, senders=2, recipients=2, processes=(1, 2), backlog=5, results=tmp_path
    )
    steps: list[str] = []

    def progress(description: str, total: int | None) -> object:
        steps.append(description)
        return lambda n: None

    benchmark.run(options, progress)  # type: ignore[arg-type]

    report = json.loads((tmp_path / "end-to-end.json").read_text())
    assert report["baseline"]["messages"] == 12
    assert report["baseline"]["per_second"] > 0
    assert _ordered(report["baseline"]["latency_ms"])
    floor = report["plumbing_floor"]
    assert floor["documents"] == 12 and floor["per_second"] > 0
    assert _ordered(floor["latency_ms"])
    assert floor["server_cpu_seconds_per_document"] > 0
    assert floor["client_cpu_seconds_per_document"] > 0
    assert 7000 <= report["options"]["size"] <= 9500  # a signed package of about 8 KB
    assert [row["validators"] for row in report["configurations"]] == [1, 2]
    for row in report["configurations"]:
        full, half = row["max"], row["half"]
        assert (full["documents"], full["copies"]) == (12, 24)
        assert (half["documents"], half["copies"]) == (6, 12)
        assert half["offered_per_second"] == pytest.approx(full["documents_per_second"] / 2)
        for figures in (full, half):
            assert figures["documents_per_second"] > 0
            delivered, recorded = (
                figures["latency_ms"]["delivered"],
                figures["latency_ms"]["recorded"],
            )
            assert delivered["count"] == recorded["count"] == figures["copies"]
            assert _ordered(delivered) and _ordered(recorded)
            assert recorded["p50"] > delivered["p50"]  # 01 is answered after the arrival
            assert figures["cpu_seconds_per_document"]["workers"] > 0
            assert figures["ratio_to_floor"] == pytest.approx(
                figures["documents_per_second"] / floor["per_second"]
            )
            assert figures["ratio_to_one_hop"] == pytest.approx(
                figures["documents_per_second"] / report["baseline"]["per_second"]
            )
            assert (
                figures["server_cpu_seconds_per_document"]
                > figures["cpu_seconds_per_document"]["workers"]  # the broker's share too
            )
            assert figures["client_cpu_seconds_per_document"] > 0
        names = {f"validator-{n}" for n in range(1, row["validators"] + 1)} | {"tracker"}
        assert names <= set(row["peak_memory_mib"])
        drained = row["backlog"]
        assert (drained["documents"], drained["copies"]) == (5, 10)
        assert drained["documents_per_second"] > 0
        assert names <= set(drained["peak_memory_mib"])  # the restarted validators' own
        assert all(mib > 20 for mib in row["peak_memory_mib"].values())
    assert set(report["server_cpu_seconds_per_document"]) == {"1", "2"}
    assert (tmp_path / "end-to-end.png").stat().st_size > 10_000
    assert any(step.startswith("2 validator(s): as fast") for step in steps)


def test_the_tracker_part_runs_and_saves_its_figures(broker: Broker, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "parts",
            "tracker",
            "--documents",
            "5",
            "--database",
            "sqlite",
            "--amqp-url",
            broker.amqp_url,
            "--mgmt-url",
            broker.mgmt.url,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tracker.json").read_text())
    assert report["events_per_database"] == 20
    figures = report["results"]["sqlite"]
    assert figures["events"] == 20 and figures["per_second"] > 0
    assert f"saved {tmp_path / 'tracker.json'}" in result.output


def test_the_http_adapter_benchmark_runs_and_reports_sane_figures(
    broker: Broker, tmp_path: Path
) -> None:
    code = CliRunner().invoke(
        app,
        [
            *("bench", "http", "--documents", "12", "--concurrency", "3"),
            *("--out", str(tmp_path), "--amqp-url", broker.amqp_url),
            *("--mgmt-url", broker.mgmt.url),
        ],
    )
    assert code.exit_code == 0, code.output
    report = json.loads((tmp_path / "http-adapter.json").read_text())
    assert report["sends_per_second"] > 0 and report["downloads_per_second"] > 0
    for figures in ("send_answer_ms", "send_to_mailbox_ms", "download_ms"):
        assert report[figures]["count"] == 12 and _ordered(report[figures]), figures
    assert "sends" in code.output and "downloads" in code.output
