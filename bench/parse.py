"""How long the format layer takes on an ~8 KB package: safe parse, schema, model, rules.

Prints figures and saves them to bench/results/parse.json. Not a test: nothing here fails
on a slow machine. Run with `make bench` or `python bench/parse.py [--iterations N]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from backbone import edxml
from backbone.edxml._reader import Reader
from backbone.edxml._safexml import check_schema, parse_untrusted
from backbone.edxml.factory import File, new_document
from backbone.edxml.limits import DEFAULT_LIMITS

RESULTS = Path(__file__).resolve().parent / "results"


def sample_package() -> bytes:
    """A document to two recipients with a 5 KB attachment: about 8 KB, like a cover letter."""
    package = new_document(
        sender="000.00.00.G22",
        recipients=["000.00.00.H41", "000.03.15.H41"],
        subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
        number="7816",
        notation="VPCP-TTĐT",
        files=[File("cong-van.pdf", bytes(range(256)) * 20, "application/pdf")],
    )
    return edxml.build(package)


def measure(operation: Callable[[], object], iterations: int) -> dict[str, float]:
    for _ in range(min(200, iterations)):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()

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
    figures = {name: measure(op, args.iterations) for name, op in stages.items()}

    print(f"edXML format layer, package of {len(data)} bytes, {args.iterations} iterations each")
    print(f"{'stage':46} {'mean µs':>9} {'median µs':>10} {'p99 µs':>9} {'per second':>11}")
    for name, f in figures.items():
        print(
            f"{name:46} {f['mean_us']:9.1f} {f['median_us']:10.1f} {f['p99_us']:9.1f} "
            f"{f['per_second']:11.0f}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "parse.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "edxml-parse",
                "when": datetime.now(UTC).isoformat(),
                "python": platform.python_version(),
                "lxml": etree.LXML_VERSION,
                "libxml2": etree.LIBXML_VERSION,
                "package_bytes": len(data),
                "iterations": args.iterations,
                "stages": figures,
            },
            indent=2,
        )
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
