"""Commands of the tracker: status and report."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from ..agency import AgencyCode, AgencyCodeError
from ..config import get_settings
from ..edxml.rules import FIRST_YEAR, YEARS_AHEAD
from ..report import Report, Reporter, period
from ..store import Store
from ..store.repository import find_outcomes
from ..store.tracking import timeline
from . import app
from ._common import database_failure, fail


def _run(work: Any) -> Any:
    settings = get_settings()

    async def run() -> Any:
        store = Store(settings.database_url)
        try:
            async with store.sessions() as session:
                return await work(session)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        raise database_failure(exc, settings.database_url) from None


@app.command()
def status(
    document_id: Annotated[str, typer.Argument(help="The edXML DocumentId or the backbone id.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
) -> None:
    """The lifecycle of a document, per recipient: current status and every event, times
    in BACKBONE_TIMEZONE."""
    zone = ZoneInfo(get_settings().timezone)

    async def work(session: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        outcomes = await find_outcomes(session, document_id)
        rejections = [
            {
                "recorded_at": when(e.recorded_at, zone),
                "sender": e.sender,
                "reason": e.reason_code,
                "description": e.description,
            }
            for e in outcomes.rejections
        ]
        found = []
        for document in outcomes.documents:
            deliveries, events = await timeline(session, document.id)
            found.append(
                {
                    "backbone_id": document.id,
                    "sender": document.sender,
                    "document_id": document.document_id,
                    "subject": document.subject,
                    "accepted_at": when(document.accepted_at, zone),
                    "recipients": [
                        {
                            "recipient": d.recipient,
                            "transport": d.transport_state,
                            "status": d.status_code,
                            "timeline": [
                                {
                                    "kind": e.kind,
                                    "status": e.status_code,
                                    "description": e.description,
                                    "occurred_at": when(e.occurred_at, zone),
                                    "recorded_at": when(e.recorded_at, zone),
                                }
                                for e in events
                                if e.recipient == d.recipient
                            ],
                        }
                        for d in deliveries
                    ],
                }
            )
        return found, rejections

    found, rejections = _run(work)
    if not found and not rejections:
        raise fail(f"no document {document_id!r}")
    if as_json:
        shown: Any = found[0] if len(found) == 1 and not rejections else found
        if rejections:
            shown = {"documents": found, "rejections": rejections}
        typer.echo(json.dumps(shown, ensure_ascii=False, indent=2))
        return
    console = Console(highlight=False, emoji=False)
    if rejections:  # every value is data from a message: escaped, never markup
        table = Table("backbone time", "sender", "reason", "description", title="rejected")
        for r in rejections:
            table.add_row(*(escape(str(r[k] or "")) for k in table_keys))
        console.print(table)
    for document in found:
        console.print(
            f"[bold]{escape(str(document['document_id']))}[/bold] from "
            f"{escape(str(document['sender']))} (backbone id {escape(document['backbone_id'])}, "
            f"accepted {document['accepted_at']})"
        )
        for recipient in document["recipients"]:
            table = Table(
                "event",
                "status",
                "package time",
                "backbone time",
                "description",
                title=escape(
                    f"{recipient['recipient']}: {recipient['transport']}, "
                    f"current status {recipient['status'] or '-'}"
                ),
            )
            for e in recipient["timeline"]:
                table.add_row(
                    *(
                        escape(str(e[k] or ""))
                        for k in ("kind", "status", "occurred_at", "recorded_at", "description")
                    )
                )
            console.print(table)


table_keys = ("recorded_at", "sender", "reason", "description")


def when(moment: datetime | None, zone: ZoneInfo) -> str | None:
    """A stored time (UTC, naive or not) in ``zone``, to the second, with its offset."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(zone).isoformat(timespec="seconds")


@app.command()
def report(
    since: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD) [30 days ago].")] = None,
    until: Annotated[str | None, typer.Option(help="Last day, included [today].")] = None,
    under: Annotated[str | None, typer.Option(help="Only this agency and the units below.")] = None,
    format_: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """The figures governments report: volumes per agency and level, how many agencies
    answer with 5+, 3-4, 1-2 or no statuses, time to 01 and 03, stuck and late documents,
    rejections by reason."""
    if format_ not in ("table", "json", "csv"):
        raise fail("--format is table, json or csv")
    settings = get_settings()
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    try:
        first = date.fromisoformat(since) if since else today - timedelta(days=30)
        last = date.fromisoformat(until) if until else today
    except ValueError as exc:
        raise fail(f"--since/--until: dates are YYYY-MM-DD ({exc})") from None
    latest = today.year + YEARS_AHEAD  # the bounds of any date in a package (edxml.rules)
    for option, day in (("--since", first), ("--until", last)):
        if not FIRST_YEAR <= day.year <= latest:
            raise fail(f"{option} {day}: expected a day from {FIRST_YEAR} to {latest}")
    if first > last:
        raise fail(f"--since {first} is after --until {last}")
    if under is not None:
        try:
            under = str(AgencyCode.parse(under))
        except AgencyCodeError as exc:
            raise fail(f"--under {under!r}: {exc}") from None
    start, end = period(first, last, settings.timezone)

    async def work(session: Any) -> Report:
        reporter = Reporter(
            session,
            settings.timezone,
            settings.holidays,
            timedelta(hours=settings.stuck_after_hours),
        )
        return await reporter.build(start, end, under)

    result: Report = _run(work)
    if format_ == "json":
        typer.echo(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    elif format_ == "csv":
        typer.echo(_csv(result), nl=False)
    else:
        _tables(result, first, last, settings.timezone)


def _rows(result: Report) -> list[tuple[str, str, object]]:
    rows: list[tuple[str, str, object]] = [("documents", "total", result.documents)]
    rows += [("sent", agency, n) for agency, n in sorted(result.sent.items())]
    rows += [("received", agency, n) for agency, n in sorted(result.received.items())]
    rows += [("sent by level", level, n) for level, n in sorted(result.sent_by_level.items())]
    rows += [
        ("received by level", level, n) for level, n in sorted(result.received_by_level.items())
    ]
    rows += [("agencies answering", bucket, n) for bucket, n in result.answering.items()]
    rows += [("not answering", agency, "") for agency in result.not_answering]
    for name, p in (("routing to 01", result.to_01), ("routing to 03", result.to_03)):
        rows += [(name, "count", p.count), (name, "median s", p.median_s), (name, "p95 s", p.p95_s)]
    rows += [("stuck deliveries", "count", result.stuck), ("late documents", "count", result.late)]
    rows += [("undeliverable", agency, n) for agency, n in sorted(result.undeliverable.items())]
    rows += [("rejections", reason, n) for reason, n in sorted(result.rejections.items())]
    return rows


def _csv(result: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["figure", "key", "value"])
    writer.writerows(_rows(result))
    return out.getvalue()


def _tables(result: Report, first: date, last: date, zone: str) -> None:
    table = Table(
        "figure",
        "key",
        "value",
        title=f"Report {first} to {last} ({zone})"
        + (f" under {result.under}" if result.under else ""),
    )
    for figure, key, value in _rows(result):
        table.add_row(
            escape(figure),
            escape(str(key)),
            "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value),
        )
    Console(highlight=False, emoji=False).print(table)
