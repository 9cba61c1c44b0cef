"""Figures from the raw timings, printed, saved as JSON, and drawn as a PNG."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._run import Phase

RESULTS = Path("bench-results")  # where the reports go unless told: beside, not in, the source
GOAL_PER_SECOND = 1000  # signed 8 KB documents a second, end to end, two validators
GOAL_RATIO = 0.40
GOAL_P99_MS = 250.0


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and the maximum, in the unit given."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0], "max": values[0], "count": 1}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": cuts[49],
        "p95": cuts[94],
        "p99": cuts[98],
        "max": max(values),
        "count": len(values),
    }


def latencies_ms(phase: Phase) -> dict[str, list[float]]:
    """Per copy: (a) send to the recipient's hands, (b) send to status 01 recorded."""
    delivered, recorded = [], []
    for package in phase.packages:
        sent = phase.sent[package.document_id]
        for recipient in package.recipients:
            pair = (package.document_id, recipient)
            if pair in phase.arrived:
                delivered.append((phase.arrived[pair] - sent) * 1000)
            recorded.append((phase.recorded[pair] - sent) * 1000)
    return {"delivered": delivered, "recorded": recorded}


def summarize(phase: Phase) -> dict[str, Any]:
    documents = len(phase.packages)
    lat = latencies_ms(phase)
    workers = sum(v for k, v in phase.cpu.items() if k.startswith(("validator", "tracker")))
    return {
        "documents": documents,
        "copies": len(phase.pairs),
        "offered_per_second": phase.offered,
        "seconds": phase.seconds,
        "documents_per_second": documents / phase.seconds,
        "latency_ms": {
            "delivered": percentiles(lat["delivered"]),
            "recorded": percentiles(lat["recorded"]),
        },
        "cpu_seconds_per_document": {
            "workers": workers / documents,
            "all": sum(phase.cpu.values()) / documents,
            **{name: seconds / documents for name, seconds in phase.cpu.items()},
        },
    }


def render(report: dict[str, Any], console: Console) -> None:
    options, baseline = report["options"], report["baseline"]
    console.print(
        f"[bold]Baseline[/bold]: one aio-pika producer and one consumer, persistent confirmed "
        f"{options['size']} B messages through one quorum queue: "
        f"[bold]{baseline['per_second']:,.0f} msg/s[/bold] "
        f"(p50 {baseline['latency_ms']['p50']:.0f} ms, p99 {baseline['latency_ms']['p99']:.0f} ms"
        + (
            f"; broker CPU {baseline['broker_cpu_seconds_per_message'] * 1000:.2f} ms/msg)"
            if baseline.get("broker_cpu_seconds_per_message") is not None
            else ")"
        )
    )
    table = Table(
        "validators",
        "load",
        "docs/s",
        "× baseline",
        "(a) delivered p50/p95/p99 ms",
        "(b) 01 recorded p50/p95/p99 ms",
        "workers CPU ms/doc",
        title=(
            f"Backbone end to end: signed {options['size']} B packages with one attachment, "
            f"{options['recipients']} recipient(s) each, database {options['database']}"
        ),
    )
    for row in report["configurations"]:
        for label, figures in (("max", row["max"]), ("half", row.get("half"))):
            if figures is None:
                continue
            load = (
                "as fast as possible"
                if label == "max"
                else f"offered {figures['offered_per_second']:,.0f}/s"
            )
            table.add_row(
                str(row["validators"]),
                load,
                f"{figures['documents_per_second']:,.0f}",
                f"{figures['documents_per_second'] / baseline['per_second']:.2f}",
                _three(figures["latency_ms"]["delivered"]),
                _three(figures["latency_ms"]["recorded"]),
                f"{figures['cpu_seconds_per_document']['workers'] * 1000:.2f}",
            )
    console.print(table)
    cores = report["cores"]
    for row in report["configurations"]:
        memory = ", ".join(f"{k} {v:.0f}" for k, v in row["peak_memory_mib"].items())
        spent = row["max"]["cpu_seconds_per_document"]
        cpu = ", ".join(
            f"{k} {v * 1000:.2f}" for k, v in spent.items() if k not in ("workers", "all")
        )
        console.print(f"{row['validators']} validator(s): peak memory MiB: {memory}")
        console.print(
            f"  CPU ms per document at full load: {cpu}; all {spent['all'] * 1000:.2f}, so "
            f"{cores} cores allow at most {cores / spent['all']:,.0f} documents/s"
        )


def _three(figures: dict[str, float]) -> str:
    return f"{figures['p50']:.0f} / {figures['p95']:.0f} / {figures['p99']:.0f}"


def save(report: dict[str, Any], results: Path, name: str = "end-to-end") -> Path:
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{name}.json"
    out.write_text(json.dumps(report, indent=2))
    return out


def plot(
    report: dict[str, Any], distributions: dict[int, dict[str, list[float]]], out: Path
) -> Path | None:
    """Throughput against validator processes, and the latency distribution at half load.
    None if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    rows = report["configurations"]
    processes = [row["validators"] for row in rows]
    left.plot(
        processes,
        [row["max"]["documents_per_second"] for row in rows],
        marker="o",
        label="backbone, documents/s end to end",
    )
    left.axhline(
        report["baseline"]["per_second"], color="grey", linestyle="--", label="bare broker"
    )
    left.axhline(GOAL_PER_SECOND, color="green", linestyle=":", label="goal (2 validators)")
    left.set_xticks(processes)
    left.set_xlabel("validator processes")
    left.set_ylabel("per second")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    left.legend()
    for validators, lat in distributions.items():
        for kind, style in (("delivered", "-"), ("recorded", "--")):
            values = sorted(lat[kind])
            if not values:
                continue
            fractions = [(i + 1) / len(values) for i in range(len(values))]
            right.plot(values, fractions, style, label=f"{validators} validator(s): {kind}")
    right.axvline(GOAL_P99_MS, color="green", linestyle=":", label="250 ms")
    right.set_xscale("log")
    right.set_xlabel("latency from the send, ms (log)")
    right.set_ylabel("fraction of copies")
    right.set_title("Latency at half the maximum load (CDF)")
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
