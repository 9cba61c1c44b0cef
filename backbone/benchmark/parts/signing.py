"""Sign and verify time per package at 8 KB, 100 KB and 1 MB (attachments make the size).

Verification is the whole of what a validator gets: safe parse, signature checks, chain
(cached after the first package), the cryptography, and the package model read from what
the signature covers. For scale, the same packages through signxml alone (pinned
certificate, and full chain validation) and the format layer alone (parse, no signature).

Then the 8 KB package with 0, 1,000 and 60,000 unused ``xmlns:`` declarations on the
root: they change no exclusive canonical form, so anyone can add them to a signed
package, and unbounded they made the XML-DSig schema check and the canonical form of
SignedInfo quadratic (60,000, 1.5 MB: 25 s before acceptance). They are counted on the
bytes before parsing: up to the limit the package verifies at about the cost per KB of a
plain one; past it, it is refused at once (the target: under 50 ms).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from signxml.verifier import XMLVerifier

from ... import edxml, signing
from ...edxml.limits import DEFAULT_LIMITS
from ...errors import PackageError
from .. import Progress
from .parse import sample_package

SECONDS = 1.0  # per measurement
SIZES = {"8 KB": 5_200, "100 KB": 74_000, "1 MB": 760_000}  # attachment bytes per package
DECLARATIONS = (0, 1_000, 60_000)
REFUSED_WITHIN_MS = 50
OPERATIONS = 6  # measured per size


def timed(operation: Callable[[], object], seconds: float, at_least: int = 20) -> dict[str, float]:
    """Median, p99 (ms) and rate of ``operation``, run for ``seconds`` and at least
    ``at_least`` times."""
    operation()
    samples: list[int] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < at_least or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        operation()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "median_ms": samples[len(samples) // 2] / 1e6,
        "p99_ms": samples[int(len(samples) * 0.99)] / 1e6,
        "per_second": 1e9 / statistics.fmean(samples),
        "runs": len(samples),
    }


def with_unused_namespaces(data: bytes, count: int) -> bytes:
    declarations = b"".join(b' xmlns:n%d="urn:unused:%d"' % (i, i) for i in range(count))
    at = data.index(b"<edXML:edXML") + len(b"<edXML:edXML")
    return data[:at] + declarations + data[at:]


def _outcome(verifier: signing.Verifier, data: bytes) -> str:
    try:
        verifier.verify(data)
    except PackageError as exc:
        return f"refused ({exc.code})"
    return "verified"


def _signxml(data: bytes, **how: Any) -> object:
    """signxml on its own, as an integrator might call it."""
    return XMLVerifier().verify(data, **how)


def _namespaces(
    verifier: signing.Verifier, signed: bytes, seconds: float, advance: Callable[[int], None]
) -> dict[str, dict[str, Any]]:
    """Verification of ``signed`` (the 8 KB package) with unused declarations added."""
    results: dict[str, dict[str, Any]] = {}
    for count in DECLARATIONS:
        data = with_unused_namespaces(signed, count)
        figures = timed(partial(_outcome, verifier, data), seconds)
        results[f"{count:,} declarations"] = {
            "declarations": count,
            "bytes": len(data),
            "outcome": _outcome(verifier, data),
            "us_per_kb": figures["median_ms"] * 1000 / (len(data) / 1024),
            **figures,
        }
        advance(1)
    return results


def run(seconds: float, progress: Progress) -> dict[str, Any]:
    measurements = len(SIZES) * OPERATIONS + len(DECLARATIONS)
    advance = progress(f"signing and verification: {seconds:g} s per measurement", measurements)
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as workdir:
        pki = signing.Pki(Path(workdir) / "pki")
        pki.init(intermediate=True)
        issued = pki.issue("000.00.00.G22", Path(workdir) / "certs")
        key = signing.load_private_key(str(issued.key))
        chain = signing.load_certificates(str(issued.certificate))
        trust = signing.TrustStore.from_files(pki.ca_bundle, pki.crls())
        binding = signing.SubjectBinding()
        fast = signing.Verifier(trust, binding, engine="fast")
        slow = signing.Verifier(trust, binding, engine="signxml")
        ca_bundle = str(pki.ca_bundle)

        results: dict[str, dict[str, dict[str, float]]] = {}
        namespaces: dict[str, dict[str, Any]] = {}
        for label, attachment in SIZES.items():
            unsigned = sample_package(os.urandom(attachment))
            signed = signing.sign(unsigned, key, chain)
            operations: dict[str, Callable[[], object]] = {
                "sign": partial(signing.sign, unsigned, key, chain),
                "verify (fast engine)": partial(fast.verify, signed),
                "verify (signxml engine)": partial(slow.verify, signed),
                "signxml alone, pinned certificate": partial(_signxml, signed, x509_cert=chain[0]),
                "signxml alone, full chain": partial(_signxml, signed, ca_pem_file=ca_bundle),
                "format layer alone (parse, no signature)": partial(edxml.parse, signed),
            }
            row = {}
            for name, operation in operations.items():
                row[name] = timed(operation, seconds)
                advance(1)
            results[f"{label} ({len(signed)} bytes)"] = row
            if not namespaces:
                namespaces = _namespaces(fast, signed, seconds, advance)
    return {
        "benchmark": "signing",
        "when": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "seconds_per_measurement": seconds,
        "results": results,
        "namespaces": namespaces,
        "namespace_limit": DEFAULT_LIMITS.max_namespace_declarations,
    }


def render(report: dict[str, Any], console: Console) -> None:
    for size, row in report["results"].items():
        table = Table(
            "operation",
            "median ms",
            "p99 ms",
            "per second",
            title=f"Signing and verification, RSA-2048, chain of 3: {size}",
        )
        for name, f in row.items():
            table.add_row(
                name, f"{f['median_ms']:.3f}", f"{f['p99_ms']:.3f}", f"{f['per_second']:,.0f}"
            )
        console.print(table)
    table = Table(
        "package",
        "bytes",
        "outcome",
        "median ms",
        "µs per KB",
        title=(
            f"Unused namespace declarations on the root (limit {report['namespace_limit']}), "
            "fast engine"
        ),
    )
    for label, f in report["namespaces"].items():
        table.add_row(
            label, str(f["bytes"]), f["outcome"], f"{f['median_ms']:.3f}", f"{f['us_per_kb']:.1f}"
        )
    console.print(table)
    hostile = report["namespaces"][f"{DECLARATIONS[-1]:,} declarations"]
    verdict = "within" if hostile["median_ms"] < REFUSED_WITHIN_MS else "OVER"
    console.print(
        f"{DECLARATIONS[-1]:,} declarations refused in {hostile['median_ms']:.2f} ms "
        f"(p99 {hostile['p99_ms']:.2f} ms): {verdict} the {REFUSED_WITHIN_MS} ms target"
    )
