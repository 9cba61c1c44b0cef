"""``backbone bench``: how fast the backbone moves signed documents, beside the bare broker.

In one run, on one broker (a private node unless URLs are given):

1. the baseline: one aio-pika producer and one consumer moving persistent, confirmed
   messages of the package size through one quorum queue, as fast as they can;
2. the plumbing floor: the four passages a document and its 01 need (submit, deliver,
   status, forward) through minimal relays with no checks (:mod:`._floor`);
3. for each number of validator processes: a fresh database, the validators and the tracker
   started as ``backbone run`` starts them, the recipients' SDKs in a process of their own
   answering status 01, and the senders' SDKs submitting pre-signed packages: a warm-up,
   then all at once (the maximum), then paced at half that maximum (the latency that
   matters in production).

Figures are printed, saved as JSON (and a PNG) under ``results``. ``parts`` times the
parts one by one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from .. import loop
from ..broker import find_broker
from ..broker.mgmt import Management
from ..edxml.factory import document_id_for
from ..signing.pki import KeyType
from ..store import migrate
from ..workers.validator import PREFETCH
from . import _baseline, _floor, _report, _world
from ._run import Configuration, Package, Phase, stamp

KiB = 1024
SIZES = {"8KB": 8 * KiB, "100KB": 100 * KiB, "1MB": 1024 * KiB}
WARM_UP = 100


class Progress(Protocol):
    def __call__(self, description: str, total: int | None) -> Callable[[int], None]:
        """Start a task; the callable advances it."""
        ...


def _silent(description: str, total: int | None) -> Callable[[int], None]:
    return lambda _: None


def default_count(size: int) -> int:
    """Enough packages for steady figures, within a few minutes and the memory they take."""
    if size <= 16 * KiB:
        return 4000
    if size <= 128 * KiB:
        return 1500
    return 200


@dataclass
class Options:
    size: int = SIZES["8KB"]
    count: int | None = None  # by size when None
    recipients: int = 1  # per package
    senders: int = 4
    database: Literal["sqlite", "postgresql"] = "sqlite"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    processes: tuple[int, ...] = (1, 2)
    prefetch: int = PREFETCH
    key_type: KeyType = "rsa"
    half_load: bool = True
    backlog: int = 0  # documents queued while the validators are stopped, then drained
    amqp_url: str | None = None  # an administrator's; with mgmt_url, instead of a private node
    mgmt_url: str | None = None
    results: Path = _report.RESULTS
    plot: bool = True
    warm_up: int = WARM_UP

    @property
    def documents(self) -> int:
        return self.count if self.count is not None else default_count(self.size)


def run(options: Options, progress: Progress = _silent) -> dict[str, Any]:
    """The whole benchmark; returns the report that was saved."""
    workdir = Path(tempfile.mkdtemp(prefix="backbone-bench-"))
    try:
        with find_broker(
            options.amqp_url,
            options.mgmt_url,
            environment=False,  # BACKBONE_AMQP_URL may be production's: only the URLs given
            otherwise="give --amqp-url and --mgmt-url",
            starting=lambda: progress("starting a private RabbitMQ node", None),
        ) as (amqp, mgmt, node):
            world = _world.World(
                amqp,
                Management(mgmt),
                workdir,
                _world.senders(options.senders),
                _world.recipients(max(2, options.recipients)),
                options.key_type,
            )
            progress("creating agencies, users, certificates", None)
            try:
                asyncio.run(world.create())
                broker_pgid = node.process.pid if node is not None and node.process else None
                return _measure(options, world, workdir, broker_pgid, progress)
            finally:
                world.destroy()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(
    options: Options,
    world: _world.World,
    workdir: Path,
    broker_pgid: int | None,
    progress: Progress,
) -> dict[str, Any]:
    attachment = _world.attachment_for(world, options.size)
    count = options.documents
    half = count // 2 if options.half_load else 0
    batches = _jobs(world, options, [options.warm_up, count, half, options.backlog])
    total = sum(len(b) for b in batches)
    advance = progress(f"signing {total} packages (the senders' work, before the clock)", total)
    bodies = iter(_world.sign_all(world, [j for b in batches for j in b], attachment, advance))
    warm, full, paced, backlog = (
        [
            Package(document_id_for(s, date.today(), n, _world.NOTATION), s, to, next(bodies))
            for s, to, n in batch
        ]
        for batch in batches
    )
    size = len(full[0].body)

    progress(f"baseline: {count} messages of {size} B through a quorum queue", None)
    baseline = _baseline.run(world.url(), size, count, broker_pgid)
    baseline_latency = _report.percentiles(baseline.pop("latencies_ms"))
    progress(f"plumbing floor: {count} documents and their statuses, four hops, no checks", None)
    floor = _floor.run(world.url(), size, count, options.prefetch, broker_pgid)
    floor_latency = _report.percentiles(floor.pop("latencies_ms"))

    rows, distributions = [], {}
    for processes in options.processes:
        with migrate.fresh(
            options.database, workdir, options.postgres_url, "backbone_bench"
        ) as database:
            asyncio.run(world.register(database))
            row, lat = loop.run(
                _configuration(
                    options,
                    world,
                    database,
                    processes,
                    broker_pgid,
                    workdir,
                    (warm, full, paced, backlog),
                    progress,
                )
            )
        rows.append(row)
        if lat is not None:
            distributions[processes] = lat
        asyncio.run(world.purge_inboxes())

    report: dict[str, Any] = {
        "benchmark": "end-to-end",
        "when": datetime.now(UTC).isoformat(),
        "options": {
            **{k: v for k, v in asdict(options).items() if k != "results"},
            "count": count,
            "size": size,
            "attachment_bytes": attachment,
            "results": str(options.results),
        },
        "cores": os.cpu_count() or 1,
        "baseline": {**baseline, "latency_ms": baseline_latency},
        "plumbing_floor": {**floor, "latency_ms": floor_latency},
        "configurations": rows,
    }
    _report.add_ratios(report)
    out = _report.save(report, options.results)
    report["saved"] = str(out)
    if options.plot:
        png = _report.plot(report, distributions, options.results / "end-to-end.png")
        report["plot"] = str(png) if png else None
    return report


def _jobs(
    world: _world.World, options: Options, sizes: list[int]
) -> list[list[tuple[str, tuple[str, ...], str]]]:
    """Who sends what to whom: senders in turn, recipients in turn; numbers unique per run."""
    batches, number = [], 0
    pool = world.recipients
    for size in sizes:
        batch = []
        for _ in range(size):
            number += 1
            sender = world.senders[number % len(world.senders)]
            to = tuple(pool[(number + k) % len(pool)] for k in range(options.recipients))
            batch.append((sender, to, f"{number}-{int(time.time())}"))
        batches.append(batch)
    return batches


async def _configuration(
    options: Options,
    world: _world.World,
    database: str,
    processes: int,
    broker_pgid: int | None,
    workdir: Path,
    batches: tuple[list[Package], list[Package], list[Package], list[Package]],
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, list[float]] | None]:
    warm, full, paced, backlog = batches
    progress(f"{processes} validator(s): starting the workers", None)
    configuration = Configuration(
        world,
        world.settings(database),
        processes,
        options.prefetch,
        options.results / "logs" / f"{processes}-validators",
        broker_pgid,
        local_postgres=options.database == "postgresql"
        and urlsplit(options.postgres_url).hostname in ("127.0.0.1", "localhost", "::1"),
    )
    phases: list[Phase] = []
    async with configuration:
        copies = sum(len(p.recipients) for p in warm)
        await configuration.phase(
            "warm-up", warm, None, progress(f"{processes} validator(s): warm-up", copies)
        )
        copies = sum(len(p.recipients) for p in full)
        maximum = await configuration.phase(
            "max", full, None, progress(f"{processes} validator(s): as fast as possible", copies)
        )
        phases.append(maximum)
        if paced:
            rate = len(full) / maximum.seconds / 2
            copies = sum(len(p.recipients) for p in paced)
            phases.append(
                await configuration.phase(
                    "half",
                    paced,
                    rate,
                    progress(f"{processes} validator(s): offered {rate:,.0f}/s", copies),
                )
            )
        peaks = configuration.peaks()
        drained, drain_peaks = None, None
        if backlog:
            copies = sum(len(p.recipients) for p in backlog)
            drained = await configuration.backlog(
                "backlog",
                backlog,
                progress(f"{processes} validator(s): a backlog of {len(backlog):,}", copies),
            )
            drain_peaks = configuration.peaks()
        stamp([*phases, *([drained] if drained else [])], await configuration.arrivals())
    row: dict[str, Any] = {
        "validators": processes,
        "max": _report.summarize(phases[0]),
        "half": _report.summarize(phases[1]) if len(phases) > 1 else None,
        "peak_memory_mib": peaks,
        "logs": str(configuration.logs),
    }
    if drained is not None:
        row["backlog"] = _report.summarize(drained) | {"peak_memory_mib": drain_peaks}
    return row, _report.latencies_ms(phases[-1]) if len(phases) > 1 else None


__all__ = ["SIZES", "Options", "Progress", "default_count", "run"]
