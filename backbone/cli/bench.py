"""``backbone bench``: the end-to-end benchmark beside the bare broker; ``backbone bench
parts``: the parts timed one by one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer
from aio_pika.exceptions import AMQPError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy.exc import SQLAlchemyError

from .. import benchmark
from ..benchmark import _report, parts
from ..benchmark.parts._databases import POSTGRES_URL, Engine
from ..workers.validator import PREFETCH
from . import app
from ._common import fail

bench_app = typer.Typer(
    rich_markup_mode=None,  # "[a private node]" is a default, not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(bench_app, name="bench")
STOPPED = (RuntimeError, OSError, SQLAlchemyError, AMQPError)  # what ends a run, in one line


def _size(text: str) -> int:
    if text.upper() in benchmark.SIZES:
        return benchmark.SIZES[text.upper()]
    try:
        value = int(text)
    except ValueError:
        raise fail(f"--size {text!r}: give 8KB, 100KB, 1MB or a number of bytes") from None
    if value < 1024:
        raise fail(f"--size {value}: a signed package is at least a few KB; give 1024 or more")
    return value


def _processes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise fail(f"--processes {text!r}: give counts separated by commas, e.g. 1,2") from None
    if not values or min(values) < 1:
        raise fail(f"--processes {text!r}: each count must be 1 or more")
    return values


@contextmanager
def _progress(console: Console) -> Iterator[benchmark.Progress]:
    """A progress bar per step; a new step closes the one before."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        steps: list[tuple[TaskID, int]] = []

        def finish() -> None:
            for step, total in steps:
                bar.update(step, total=total, completed=total)
                bar.stop_task(step)
            steps.clear()

        def step(description: str, total: int | None) -> Callable[[int], None]:
            finish()  # the step before is over
            steps.append((bar.add_task(description, total=total), total or 1))
            current = steps[0][0]
            return lambda n: bar.advance(current, n)

        yield step
        finish()


def _broker_options(amqp_url: str | None, mgmt_url: str | None) -> None:
    if bool(amqp_url) != bool(mgmt_url):
        raise fail("--amqp-url and --mgmt-url go together")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    size: Annotated[
        str, typer.Option(help="Signed package size: 8KB, 100KB, 1MB or bytes.")
    ] = "8KB",
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Packages at full load [4000 at 8 KB, fewer if larger]."),
    ] = None,
    recipients: Annotated[int, typer.Option(min=1, help="Recipients per package.")] = 1,
    senders: Annotated[int, typer.Option(min=1, help="Sending agencies.")] = 4,
    database: Annotated[
        Literal["sqlite", "postgresql"], typer.Option(help="The tracker's database.")
    ] = "sqlite",
    postgres_url: Annotated[
        str, typer.Option(help="A PostgreSQL server, as a user who may create databases.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    processes: Annotated[
        str, typer.Option(help="Validator processes to measure, e.g. 1,2.")
    ] = "1,2",
    prefetch: Annotated[
        int, typer.Option(min=1, help="Messages in flight per validator.")
    ] = PREFETCH,
    key_type: Annotated[
        Literal["rsa", "ec"], typer.Option(help="Agency keys: RSA 2048 or ECDSA P-256.")
    ] = "rsa",
    half_load: Annotated[
        bool, typer.Option(help="Also measure latency at half the maximum load.")
    ] = True,
    backlog: Annotated[
        int,
        typer.Option(
            min=0,
            help="Then queue this many with the validators stopped, and time the drain.",
        ),
    ] = 0,
    plot: Annotated[bool, typer.Option(help="Draw end-to-end.png beside the JSON.")] = True,
    results: Annotated[
        Path, typer.Option("--out", "--results", help="Where the JSON, plot and logs go.")
    ] = _report.RESULTS,
    amqp_url: Annotated[
        str | None, typer.Option(help="A broker as its administrator [a private node].")
    ] = None,
    mgmt_url: Annotated[
        str | None, typer.Option(help="Its management API, with --amqp-url.")
    ] = None,
) -> None:
    """Measure signed documents end to end (send, validate, route, receive, status 01
    recorded) beside one producer and one consumer on the bare broker; print the figures and
    save them under bench-results/. `backbone bench parts` times the parts one by one."""
    if ctx.invoked_subcommand is not None:
        return
    _broker_options(amqp_url, mgmt_url)
    options = benchmark.Options(
        size=_size(size),
        count=count,
        recipients=recipients,
        senders=senders,
        database=database,
        postgres_url=postgres_url,
        processes=_processes(processes),
        prefetch=prefetch,
        key_type=key_type,
        half_load=half_load,
        backlog=backlog,
        amqp_url=amqp_url,
        mgmt_url=mgmt_url,
        results=results,
        plot=plot,
    )
    console = Console(highlight=False)
    with _progress(console) as progress:
        try:
            report = benchmark.run(options, progress)
        except STOPPED as exc:
            raise fail(f"the benchmark stopped: {exc}") from None
    _report.render(report, console)
    console.print(
        f"saved {report['saved']}" + (f" and {report['plot']}" if report.get("plot") else "")
    )


@bench_app.command("http")
def bench_http(
    documents: Annotated[int, typer.Option(min=1, help="Documents sent and received.")] = 1000,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Requests in flight per DMS.")
    ] = 16,
    size: Annotated[
        str, typer.Option(help="Signed package size: 8KB, 100KB, 1MB or bytes.")
    ] = "8KB",
    results: Annotated[
        Path, typer.Option("--out", "--results", help="Where the JSON goes.")
    ] = _report.RESULTS,
    amqp_url: Annotated[
        str | None, typer.Option(help="A broker as its administrator [a private node].")
    ] = None,
    mgmt_url: Annotated[
        str | None, typer.Option(help="Its management API, with --amqp-url.")
    ] = None,
) -> None:
    """Measure documents through the HTTP adapter: sends and downloads per second, and the
    latency from the HTTP send to the package in the recipient's mailbox; saved as
    http-adapter.json under bench-results/."""
    from adapters.http import bench as http_bench

    _broker_options(amqp_url, mgmt_url)
    options = http_bench.Options(
        documents=documents,
        concurrency=concurrency,
        size=_size(size),
        results=results,
        amqp_url=amqp_url,
        mgmt_url=mgmt_url,
    )
    console = Console(highlight=False)
    with _progress(console) as progress:
        try:
            report = http_bench.run(options, progress)
        except (*STOPPED, RuntimeError) as exc:
            raise fail(f"the benchmark stopped: {exc}") from None
    http_bench.render(report, console.print)
    console.print(f"saved {report['saved']}")


@bench_app.command("parts")
def bench_parts(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="PART",
            help=f"Which parts: {', '.join(parts.PARTS)} [all].",
            show_default=False,
        ),
    ] = None,
    iterations: Annotated[
        int, typer.Option(min=1, help="parse: runs of each stage of the format layer.")
    ] = parts.parse.ITERATIONS,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="signing: seconds per measurement.")
    ] = parts.signing.SECONDS,
    departments: Annotated[
        int,
        typer.Option(min=1, help="agencies: departments of the province, 401 agencies each."),
    ] = parts.agencies.DEPARTMENTS,
    documents: Annotated[
        int, typer.Option(min=1, help="tracker: accepted documents, 4 events each.")
    ] = parts.tracker.DOCUMENTS,
    database: Annotated[
        Engine | None,
        typer.Option(
            help="agencies, tracker: one database [sqlite, and postgresql if it answers].",
            show_default=False,
        ),
    ] = None,
    postgres_url: Annotated[
        str, typer.Option(help="A PostgreSQL server, as a user who may create databases.")
    ] = POSTGRES_URL,
    out: Annotated[Path, typer.Option(help="Where the JSON goes.")] = _report.RESULTS,
    amqp_url: Annotated[
        str | None, typer.Option(help="tracker: a broker as its administrator [a private node].")
    ] = None,
    mgmt_url: Annotated[
        str | None, typer.Option(help="Its management API, with --amqp-url.")
    ] = None,
) -> None:
    """Time the parts one by one: parse (the format layer), signing (and verification),
    agencies (the CSV import), tracker (events recorded a second); print each one's figures
    and save them as PART.json under bench-results/."""
    _broker_options(amqp_url, mgmt_url)
    unknown = [n for n in names or () if n not in parts.PARTS]
    if unknown:
        raise fail(f"no part {unknown[0]!r}: give {', '.join(parts.PARTS)}")
    options = parts.Options(
        parts=tuple(dict.fromkeys(names)) if names else tuple(parts.PARTS),
        iterations=iterations,
        seconds=seconds,
        departments=departments,
        documents=documents,
        databases=(database,) if database else None,
        postgres_url=postgres_url,
        amqp_url=amqp_url,
        mgmt_url=mgmt_url,
        out=out,
    )
    console = Console(highlight=False)
    with _progress(console) as progress:
        try:
            for name, report, saved in parts.run(options, progress):
                parts.PARTS[name].render(report, console)
                console.print(f"saved {saved}", soft_wrap=True)
        except STOPPED as exc:
            raise fail(f"the benchmark stopped: {exc}") from None
