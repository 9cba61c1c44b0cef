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

Prints figures, saves bench/results/signing.json. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from signxml.verifier import XMLVerifier

from backbone import edxml, signing
from backbone.edxml.factory import File, new_document
from backbone.edxml.limits import DEFAULT_LIMITS
from backbone.errors import PackageError

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"8 KB": 5_200, "100 KB": 74_000, "1 MB": 760_000}  # attachment bytes per package
DECLARATIONS = (0, 1_000, 60_000)
REFUSED_WITHIN_MS = 50


def timed(operation: Callable[[], object], seconds: float, at_least: int = 20) -> dict[str, float]:
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


def namespaces(
    verifier: signing.Verifier, signed: bytes, seconds: float
) -> dict[str, dict[str, object]]:
    """Verification of ``signed`` (the 8 KB package) with unused declarations added."""

    def verify(data: bytes) -> str:
        try:
            verifier.verify(data)
        except PackageError as exc:
            return f"refused ({exc.code})"
        return "verified"

    results: dict[str, dict[str, object]] = {}
    for count in DECLARATIONS:
        data = with_unused_namespaces(signed, count)
        figures = timed(partial(verify, data), seconds)
        results[f"{count:,} declarations"] = {
            "declarations": count,
            "bytes": len(data),
            "outcome": verify(data),
            "us_per_kb": figures["median_ms"] * 1000 / (len(data) / 1024),
            **figures,
        }
    return results


def print_namespaces(results: dict[str, dict[str, object]]) -> None:
    limit = DEFAULT_LIMITS.max_namespace_declarations
    print(f"\nunused namespace declarations on the root (limit {limit}), fast engine")
    print(f"  {'package':22} {'bytes':>9} {'outcome':>20} {'median ms':>10} {'µs per KB':>10}")
    for label, row in results.items():
        print(
            f"  {label:22} {row['bytes']:9} {row['outcome']:>20} "
            f"{row['median_ms']:10.3f} {row['us_per_kb']:10.1f}"
        )
    hostile = results[f"{DECLARATIONS[-1]:,} declarations"]
    median = float(hostile["median_ms"])  # type: ignore[arg-type]
    verdict = "within" if median < REFUSED_WITHIN_MS else "OVER"
    print(
        f"  {DECLARATIONS[-1]:,} declarations refused in {median:.2f} ms "
        f"(p99 {float(hostile['p99_ms']):.2f} ms): {verdict} the {REFUSED_WITHIN_MS} ms target"  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="backbone-bench-"))
    pki = signing.Pki(workdir / "pki")
    pki.init(intermediate=True)
    issued = pki.issue("000.00.00.G22", workdir / "certs")
    key = signing.load_private_key(str(issued.key))
    chain = signing.load_certificates(str(issued.certificate))
    trust = signing.TrustStore.from_files(pki.ca_bundle, pki.crls())
    binding = signing.SubjectBinding()
    verifiers = {e: signing.Verifier(trust, binding, engine=e) for e in ("fast", "signxml")}

    results: dict[str, dict[str, dict[str, float]]] = {}
    namespace_results: dict[str, dict[str, object]] = {}
    for label, attachment in SIZES.items():
        package = new_document(
            sender="000.00.00.G22",
            recipients=["000.00.00.H41", "000.03.15.H41"],
            subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
            number="7816",
            notation="VPCP-TTĐT",
            files=[File("cong-van.pdf", os.urandom(attachment), "application/pdf")],
        )
        unsigned = edxml.build(package)
        signed = signing.sign(unsigned, key, chain)
        row = {
            "sign": timed(lambda u=unsigned: signing.sign(u, key, chain), args.seconds),
            "verify (fast engine)": timed(
                lambda s=signed: verifiers["fast"].verify(s), args.seconds
            ),
            "verify (signxml engine)": timed(
                lambda s=signed: verifiers["signxml"].verify(s), args.seconds
            ),
            "signxml alone, pinned certificate": timed(
                lambda s=signed: XMLVerifier().verify(s, x509_cert=chain[0]), args.seconds
            ),
            "signxml alone, full chain": timed(
                lambda s=signed: XMLVerifier().verify(s, ca_pem_file=str(pki.ca_bundle)),
                args.seconds,
            ),
            "format layer alone (parse, no signature)": timed(
                lambda s=signed: edxml.parse(s), args.seconds
            ),
        }
        results[f"{label} ({len(signed)} bytes)"] = row
        if not namespace_results:
            namespace_results = namespaces(verifiers["fast"], signed, args.seconds)

    print(f"signing and verification, RSA-2048, chain of 3, {platform.python_version()}")
    for size, row in results.items():
        print(f"\n{size}")
        print(f"  {'operation':44} {'median ms':>10} {'p99 ms':>8} {'per second':>11}")
        for name, f in row.items():
            print(f"  {name:44} {f['median_ms']:10.3f} {f['p99_ms']:8.3f} {f['per_second']:11.0f}")
    print_namespaces(namespace_results)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "signing.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "signing",
                "when": datetime.now(UTC).isoformat(),
                "results": results,
                "namespaces": namespace_results,
            },
            indent=2,
        )
    )
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
