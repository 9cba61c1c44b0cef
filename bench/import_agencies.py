"""How long importing 20,000 agencies from CSV takes, on SQLite and (if reachable) PostgreSQL.

A fresh database each time; the second run of the same file measures an idempotent re-import.
Prints figures and saves bench/results/import_agencies.json. Not a test.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from backbone.registry import Registry
from backbone.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.databases import migrated, postgres_unreachable
from tests.integration.test_registry import hierarchy

RESULTS = Path(__file__).resolve().parent / "results"


async def _import(url: str, csv_path: Path) -> dict[str, float]:
    store = Store(url)
    registry = Registry(store)
    try:
        started = time.perf_counter()
        first = await registry.import_csv(csv_path)
        middle = time.perf_counter()
        second = await registry.import_csv(csv_path)
        end = time.perf_counter()
    finally:
        await store.close()
    assert first.added == second.unchanged
    return {"agencies": first.added, "import_s": middle - started, "reimport_s": end - middle}


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="backbone-import-"))
    csv_path = workdir / "agencies.csv"
    rows = hierarchy("H41")
    csv_path.write_text(
        "code,name,parent\n" + "".join(f"{c},{n},{p}\n" for c, n, p in rows), encoding="utf-8"
    )
    results = {}
    engines = ["sqlite"] + ([] if postgres_unreachable() else ["postgresql"])
    for engine in engines:
        with migrated(engine, workdir) as url:
            results[engine] = asyncio.run(_import(url, csv_path))
    print(f"importing {len(rows)} agencies from CSV")
    for engine, figures in results.items():
        print(
            f"  {engine:10} import {figures['import_s']:6.2f} s "
            f"({figures['agencies'] / figures['import_s']:8.0f} agencies/s), "
            f"re-import {figures['reimport_s']:6.2f} s"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "import_agencies.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "import-agencies",
                "when": datetime.now(UTC).isoformat(),
                "results": results,
            },
            indent=2,
        )
    )
    print(f"saved {out}")


if __name__ == "__main__":
    main()
