"""Sign and verify time per package at 8 KB, 100 KB and 1 MB (attachments make the size).

Verification is the whole of what a validator gets: safe parse, signature checks, chain
(cached after the first package), the cryptography, and the package model read from what
the signature covers. For scale, the same packages through signxml alone (pinned
certificate, and full chain validation) and the format layer alone (parse, no signature).
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
from pathlib import Path

from signxml.verifier import XMLVerifier

from backbone import edxml, signing
from backbone.edxml.factory import File, new_document

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"8 KB": 5_200, "100 KB": 74_000, "1 MB": 760_000}  # attachment bytes per package


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

    print(f"signing and verification, RSA-2048, chain of 3, {platform.python_version()}")
    for size, row in results.items():
        print(f"\n{size}")
        print(f"  {'operation':44} {'median ms':>10} {'p99 ms':>8} {'per second':>11}")
        for name, f in row.items():
            print(f"  {name:44} {f['median_ms']:10.3f} {f['p99_ms']:8.3f} {f['per_second']:11.0f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "signing.json"
    out.write_text(
        json.dumps(
            {"benchmark": "signing", "when": datetime.now(UTC).isoformat(), "results": results},
            indent=2,
        )
    )
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
