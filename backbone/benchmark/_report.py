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
GOAL_RATIO = 0.6  # of the plumbing floor, two validators
GOAL_P99_MS = 250.0  # send to 01 recorded, at half the maximum load


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and the maximum, in the unit given."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "count": 0}
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0], "p99": values[0], "max": values[0], "count": 1}
    top = max(values)
    # interpolation between the two largest values can overshoot the larger by a rounding error
    cuts = [min(cut, top) for cut in statistics.quantiles(values, n=100, method="inclusive")]
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": top, "count": len(values)}


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


SERVER = ("validator", "tracker", "broker", "PostgreSQL")  # what production runs centrally


def summarize(phase: Phase) -> dict[str, Any]:
    documents = len(phase.packages)
    lat = latencies_ms(phase)
    workers = sum(v for k, v in phase.cpu.items() if k.startswith(("validator", "tracker")))
    server = sum(v for k, v in phase.cpu.items() if k.startswith(SERVER))
    client = sum(v for k, v in phase.cpu.items() if not k.startswith(SERVER))
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
        # the broker's share is known only on a private node (its process group)
        "server_cpu_seconds_per_document": server / documents if "broker" in phase.cpu else None,
        "client_cpu_seconds_per_document": client / documents,
    }


def add_ratios(report: dict[str, Any]) -> None:
    """Each measured load as a fraction of the plumbing floor and of the one-hop baseline,
    both measured in the same run; the server's CPU per document at full load, in sum."""
    floor, one_hop = report["plumbing_floor"]["per_second"], report["baseline"]["per_second"]
    for row in report["configurations"]:
        for figures in (row["max"], row.get("half")):
            if figures is not None:
                figures["ratio_to_floor"] = figures["documents_per_second"] / floor
                figures["ratio_to_one_hop"] = figures["documents_per_second"] / one_hop
    report["server_cpu_seconds_per_document"] = {
        str(row["validators"]): row["max"]["server_cpu_seconds_per_document"]
        for row in report["configurations"]
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
    floor = report["plumbing_floor"]
    console.print(
        f"[bold]Plumbing floor[/bold]: the same four passages a document and its 01 need, "
        f"minimal relays, no checks: [bold]{floor['per_second']:,.0f} documents/s[/bold] "
        f"(p50 {floor['latency_ms']['p50']:.0f} ms, p99 {floor['latency_ms']['p99']:.0f} ms"
        + (
            f"; server CPU {floor['server_cpu_seconds_per_document'] * 1000:.2f} ms/doc, "
            f"clients {floor['client_cpu_seconds_per_document'] * 1000:.2f})"
            if floor.get("server_cpu_seconds_per_document") is not None
            else ")"
        )
    )
    table = Table(
        "validators",
        "load",
        "docs/s",
        "× floor",
        "× one hop",
        "(a) delivered p50/p95/p99 ms",
        "(b) 01 recorded p50/p95/p99 ms",
        "server CPU ms/doc",
        "clients CPU ms/doc",
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
                f"{figures['ratio_to_floor']:.2f}",
                f"{figures['ratio_to_one_hop']:.2f}",
                _three(figures["latency_ms"]["delivered"]),
                _three(figures["latency_ms"]["recorded"]),
                _ms(figures["server_cpu_seconds_per_document"]),
                _ms(figures["client_cpu_seconds_per_document"]),
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
        drained = row.get("backlog")
        if drained is not None:
            peaks = ", ".join(f"{k} {v:.0f}" for k, v in drained["peak_memory_mib"].items())
            console.print(
                f"  a backlog of {drained['documents']:,} queued with the validators stopped "
                f"drained at {drained['documents_per_second']:,.0f} documents/s; peak memory "
                f"MiB since: {peaks}"
            )
        server = row["max"]["server_cpu_seconds_per_document"]
        if server:
            console.print(
                f"  server side (broker, validators, tracker) {server * 1000:.2f} ms/doc: "
                f"{1 / server:,.0f} documents/s per server core, with the agencies elsewhere"
            )


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f}"


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
        report["baseline"]["per_second"], color="grey", linestyle="--", label="bare broker, one hop"
    )
    floor = report["plumbing_floor"]["per_second"]
    left.axhline(floor, color="black", linestyle="--", label="plumbing floor, four hops")
    left.axhline(
        GOAL_RATIO * floor, color="green", linestyle=":", label=f"goal: {GOAL_RATIO} × floor"
    )
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
