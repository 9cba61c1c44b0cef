"""How long importing a province's agencies from CSV takes (20,051 by default): a fresh
database each time, then the same file again, which measures an idempotent re-import."""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ...registry import Registry
from ...store import Store, migrate
from .. import Progress
from ._databases import PREFIX, Engine

DEPARTMENTS = 50
UNITS = 20  # per department
COMMUNES = 19  # per unit


def hierarchy(
    root: str, level2: int = DEPARTMENTS, level3: int = UNITS, level4: int = COMMUNES
) -> list[tuple[str, str, str]]:
    """(code, name, parent) of one province, its departments, their units and communes:
    1 + 50 + 1000 + 19000 by default, parents first."""
    province = f"000.00.00.{root}"
    rows = [(province, f"UBND {root}", "")]
    for m in range(1, level2 + 1):
        department = f"000.00.{m:02d}.{root}"
        rows.append((department, f"Sở {m}", province))
        for k in range(1, level3 + 1):
            unit = f"000.{k:02d}.{m:02d}.{root}"
            rows.append((unit, f"Phòng {k}.{m}", department))
            rows.extend(
                (f"{n:03d}.{k:02d}.{m:02d}.{root}", f"Xã {n}.{k}.{m}", unit)
                for n in range(1, level4 + 1)
            )
    return rows


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """The rows as ``backbone agency import`` reads them."""
    path.write_text(
        "code,name,parent\n" + "".join(f"{c},{n},{p}\n" for c, n, p in rows), encoding="utf-8"
    )


async def _import(
    url: str, csv_path: Path, agencies: int, engine: str, progress: Progress
) -> dict[str, float]:
    store = Store(url)
    registry = Registry(store)
    advance = progress(f"importing {agencies:,} agencies on {engine}", agencies)
    done = 0

    def imported(count: int, total: int) -> None:
        nonlocal done
        advance(count - done)
        done = count

    try:
        started = time.perf_counter()
        first = await registry.import_csv(csv_path, imported)
        middle = time.perf_counter()
        progress(f"agency re-import on {engine}", None)
        second = await registry.import_csv(csv_path)
        end = time.perf_counter()
    finally:
        await store.close()
    if first.refused or second.unchanged != first.added:
        raise RuntimeError(f"the import on {engine} did not add every agency once")
    return {"agencies": first.added, "import_s": middle - started, "reimport_s": end - middle}


def run(
    departments: int, engines: tuple[Engine, ...], postgres_url: str, progress: Progress
) -> dict[str, Any]:
    rows = hierarchy("H41", departments)
    results = {}
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as workdir:
        csv_path = Path(workdir) / "agencies.csv"
        write_csv(csv_path, rows)
        for engine in engines:
            progress(f"a fresh {engine} database", None)
            with migrate.fresh(engine, Path(workdir), postgres_url, PREFIX) as url:
                results[engine] = asyncio.run(_import(url, csv_path, len(rows), engine, progress))
    return {
        "benchmark": "import-agencies",
        "when": datetime.now(UTC).isoformat(),
        "agencies": len(rows),
        "results": results,
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        "database",
        "import s",
        "agencies/s",
        "re-import s",
        title=f"Importing {report['agencies']:,} agencies from CSV",
    )
    for engine, f in report["results"].items():
        table.add_row(
            engine,
            f"{f['import_s']:.2f}",
            f"{f['agencies'] / f['import_s']:,.0f}",
            f"{f['reimport_s']:.2f}",
        )
    console.print(table)
