"""The format layer on an ~8 KB package, stage by stage: safe parse, schema, model, rules,
and building it back; beside lxml's own parse with its unsafe defaults, for scale."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lxml import etree
from rich.console import Console
from rich.table import Table

from ... import edxml
from ...edxml._reader import Reader
from ...edxml._safexml import check_schema, parse_untrusted
from ...edxml.factory import File, new_document
from ...edxml.limits import DEFAULT_LIMITS
from .. import Progress

ITERATIONS = 5000
WARM_UP = 200


def sample_package(attachment: bytes = bytes(range(256)) * 20) -> bytes:
    """A document to two recipients with ``attachment`` (by default 5 KB: about 8 KB in
    all, like a cover letter)."""
    package = new_document(
        sender="000.00.00.G22",
        recipients=["000.00.00.H41", "000.03.15.H41"],
        subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
        number="7816",
        notation="VPCP-TTĐT",
        files=[File("cong-van.pdf", attachment, "application/pdf")],
    )
    return edxml.build(package)


def measure(operation: Callable[[], object], iterations: int) -> dict[str, float]:
    """Mean, median, p99 (µs) and rate of ``operation`` after a warm-up."""
    for _ in range(min(WARM_UP, iterations)):
        operation()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        operation()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "mean_us": statistics.fmean(samples) / 1000,
        "median_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "per_second": 1e9 / statistics.fmean(samples),
    }


def run(iterations: int, progress: Progress) -> dict[str, Any]:
    data = sample_package()
    root = parse_untrusted(data, DEFAULT_LIMITS)
    package = edxml.parse(data)
    reader = Reader(DEFAULT_LIMITS)
    plain = etree.XMLParser()
    stages: dict[str, Callable[[], object]] = {
        "lxml parse alone (baseline, unsafe defaults)": lambda: etree.fromstring(data, plain),
        "safe parse": lambda: parse_untrusted(data, DEFAULT_LIMITS),
        "schema check": lambda: check_schema(root),
        "tree to model": lambda: reader.package(root),
        "semantic rules": lambda: edxml.check(package),
        "load = all of the above": lambda: edxml.load(data),
        "build (model to bytes, checked)": lambda: edxml.build(package),
    }
    advance = progress(f"format layer: {iterations} iterations of each stage", len(stages))
    figures = {}
    for name, operation in stages.items():
        figures[name] = measure(operation, iterations)
        advance(1)
    return {
        "benchmark": "edxml-parse",
        "when": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "lxml": list(etree.LXML_VERSION),
        "libxml2": list(etree.LIBXML_VERSION),
        "package_bytes": len(data),
        "iterations": iterations,
        "stages": figures,
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        "stage",
        "mean µs",
        "median µs",
        "p99 µs",
        "per second",
        title=(
            f"edXML format layer, package of {report['package_bytes']} bytes, "
            f"{report['iterations']} iterations each"
        ),
    )
    for name, f in report["stages"].items():
        table.add_row(
            name,
            f"{f['mean_us']:.1f}",
            f"{f['median_us']:.1f}",
            f"{f['p99_us']:.1f}",
            f"{f['per_second']:,.0f}",
        )
    console.print(table)
