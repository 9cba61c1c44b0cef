"""``backbone bench parts``: the parts of the backbone timed one by one, apart from the
broker and the other parts: the format layer, signing and verification, the agency import,
the tracker. Each returns a report that is saved as JSON; nothing here fails on a slow
machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import Progress, _report
from . import agencies, parse, signing, tracker
from ._databases import POSTGRES_URL, Engine, chosen


@dataclass
class Options:
    parts: tuple[str, ...] = ("parse", "signing", "agencies", "tracker")
    iterations: int = parse.ITERATIONS
    seconds: float = signing.SECONDS
    departments: int = agencies.DEPARTMENTS
    documents: int = tracker.DOCUMENTS
    databases: tuple[Engine, ...] | None = None  # SQLite, and PostgreSQL if it answers
    postgres_url: str = POSTGRES_URL
    amqp_url: str | None = None  # an administrator's; with mgmt_url, instead of a private node
    mgmt_url: str | None = None
    out: Path = _report.RESULTS


@dataclass(frozen=True)
class Part:
    about: str
    measure: Callable[[Options, Progress], dict[str, Any]]
    render: Callable[[dict[str, Any], Console], None]


def _agencies(options: Options, progress: Progress) -> dict[str, Any]:
    engines = chosen(options.databases, options.postgres_url)
    return agencies.run(options.departments, engines, options.postgres_url, progress)


def _tracker(options: Options, progress: Progress) -> dict[str, Any]:
    engines = chosen(options.databases, options.postgres_url)
    return tracker.run(
        options.documents,
        engines,
        options.postgres_url,
        options.amqp_url,
        options.mgmt_url,
        progress,
    )


PARTS = {
    "parse": Part("the format layer", lambda o, p: parse.run(o.iterations, p), parse.render),
    "signing": Part(
        "signing and verification", lambda o, p: signing.run(o.seconds, p), signing.render
    ),
    "agencies": Part("the agency import", _agencies, agencies.render),
    "tracker": Part("the tracker", _tracker, tracker.render),
}


def run(options: Options, progress: Progress) -> Iterator[tuple[str, dict[str, Any], Path]]:
    """Each part in turn: its name, its report, and where the report was saved."""
    for name in options.parts:
        report = PARTS[name].measure(options, progress)
        yield name, report, _report.save(report, options.out, name)


__all__ = ["PARTS", "Options", "Part", "run"]
