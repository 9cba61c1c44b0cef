"""Commands of the store and registry: init, agency, gateway. Each parses its options,
runs its workflow of :mod:`backbone.operations` and prints what each step did."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..broker import topology
from ..config import get_settings
from ..errors import BrokerUnreachable
from ..operations import (
    DatabaseReady,
    DatabaseSetupError,
    Deactivated,
    Event,
    Operations,
    Registered,
    Routes,
    Tell,
    TopologyReady,
    UserProvisioned,
    WithoutUser,
    WorkersAreAdministrator,
    hide_password,
)
from ..registry import ImportReport, Registry
from ..store.models import Agency
from . import _broker as broker
from . import app
from ._common import checked_password, fail, password_from, plural, warn, with_registry

agency_app = typer.Typer(
    help="Register, list, remove and import agencies, with their broker users.",
    no_args_is_help=True,
)
gateway_app = typer.Typer(
    help="Provincial gateways serving patterns of agencies.", no_args_is_help=True
)
app.add_typer(agency_app, name="agency")
app.add_typer(gateway_app, name="gateway")


@app.command()
def init(
    broker_: Annotated[
        bool, typer.Option("--broker/--no-broker", help="Also set up the broker.")
    ] = True,
) -> None:
    """Set up the database (every migration) and the broker: exchanges and queues, the
    workers' and the operators' users, the grants of registered principals, and every
    agency bound to the one queue that serves it (older bindings are brought in line).
    Safe to run again: what already matches is left as it is."""
    settings = get_settings()
    shown = hide_password(settings.database_url)

    def tell(event: Event) -> None:
        if isinstance(event, DatabaseReady):
            typer.echo(f"database ready: {shown}")
        elif isinstance(event, Routes):  # what waits where is for the registry commands
            for line in broker.route_lines(event):
                typer.echo(line)
        elif isinstance(event, TopologyReady):
            typer.echo(
                "broker ready: topology declared, every agency bound to the queue that serves it"
            )
        elif isinstance(event, WorkersAreAdministrator):
            typer.echo(
                f"note: the workers connect as {event.username}, the administrator: for local "
                "development only; elsewhere give them a user of their own in BACKBONE_AMQP_URL"
            )
        elif isinstance(event, WithoutUser):
            typer.echo(
                f"warning: {plural(len(event.usernames), 'principal')} without a broker user: "
                f"{', '.join(event.usernames)}; "
                "give each one with `backbone agency add CODE --name NAME` "
                "(or `backbone gateway add NAME --serves PATTERN`)",
                err=True,
            )
        elif not (
            isinstance(event, UserProvisioned)
            and event.role == "principal"
            and not event.done.changes
        ):
            broker.show(event)

    async def work(operations: Operations) -> None:
        try:
            await operations.init(broker=broker_)
        except DatabaseSetupError as exc:
            raise fail(f"cannot set up {shown}: {exc}") from None
        except BrokerUnreachable as exc:  # said as a warning: the database part was done
            warn(str(exc))
            raise typer.Exit(1) from None

    broker.run(work, tell)


def _password(password: str | None, password_file: Path | None) -> str | None:
    """The password given on the command line, in the environment or in a file."""
    if password is not None and password_file is not None:
        raise fail("give --password or --password-file, not both")
    if password_file is not None:
        return password_from(password_file)
    return None if password is None else checked_password(password)


PASSWORD_HELP = (
    "Its broker password (default: generated, printed once). Visible to every user of "
    "this machine in the process list: prefer --password-file or the environment variable."
)
PASSWORD_FILE_HELP = "A file whose first line is its broker password."
ROTATE_HELP = "Give it a new password (printed once) and close its open connections."


@agency_app.command("add")
def agency_add(
    code: Annotated[str, typer.Argument(help="The agency identifier, e.g. 000.00.15.H41.")],
    name: Annotated[str, typer.Option(help="The agency's name.")],
    parent: Annotated[str | None, typer.Option(help="The unit above it, if registered.")] = None,
    cert: Annotated[
        list[Path] | None, typer.Option(help="A certificate (PEM) it signs with (repeatable).")
    ] = None,
    principal: Annotated[
        bool, typer.Option(help="Also a broker user acting for this agency alone.")
    ] = True,
    password: Annotated[
        str | None, typer.Option(help=PASSWORD_HELP, envvar="BACKBONE_AGENCY_PASSWORD")
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
    rotate_password: Annotated[bool, typer.Option(help=ROTATE_HELP)] = False,
) -> None:
    """Register an agency (or rename and re-activate it), with its certificates, and its
    broker user: named by the identifier, it may publish to edoc.submit under that
    identifier only and read its own inbox, nothing else. Every input is checked before
    anything is written; safe to run again."""
    certificates = []
    for path in cert or []:
        try:
            certificates.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or "not a PEM certificate"
            raise fail(f"cannot read the certificate {path}: {why}") from None
    secret = _password(password, password_file)

    def tell(event: Event) -> None:
        if isinstance(event, Registered):
            typer.echo(
                f"{code} registered ({name.strip()})"
                + (f" with {plural(len(certificates), 'certificate')}" if certificates else "")
            )
        else:
            broker.show(event)

    broker.run(
        lambda operations: operations.add_agency(
            code,
            name,
            parent=parent,
            certificates=certificates,
            principal=principal,
            password=secret,
            rotate=rotate_password,
        ),
        tell,
    )


@agency_app.command("list")
def agency_list(
    level: Annotated[int | None, typer.Option(min=1, max=4, help="Only this level.")] = None,
    under: Annotated[str | None, typer.Option(help="Only units below this agency.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include deactivated agencies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List agencies, by level or below a unit, with the queue that serves each one."""

    async def work(registry: Registry) -> tuple[list[Agency], dict[str, str], set[str]]:
        agencies = await registry.list_agencies(level=level, under=under, include_inactive=all_)
        principals = await registry.list_principals("agency")
        own = {p.username for p in principals if p.active}
        return agencies, await registry.delivery_queues(), own

    agencies, served, own = with_registry(work)
    if as_json:
        for a in agencies:
            typer.echo(
                json.dumps(
                    {
                        "code": a.code,
                        "name": a.name,
                        "parent": a.parent_code,
                        "level": a.level,
                        "active": a.active,
                        "served_by": served.get(a.code),
                        "broker_user": a.code in own,
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table(
        "code",
        "name",
        "level",
        "parent",
        "active",
        "served by",
        title=plural(len(agencies), "agency"),
    )
    for a in agencies:
        queue = served.get(a.code, "")
        note = (
            " (no broker user yet)" if queue == topology.inbox(a.code) and a.code not in own else ""
        )
        table.add_row(
            *(
                Text(value)
                for value in (
                    a.code,
                    a.name,
                    str(a.level),
                    a.parent_code or "",
                    "yes" if a.active else "no",
                    queue + note,
                )
            )
        )
    Console(highlight=False, emoji=False).print(table)


@agency_app.command("remove")
def agency_remove(code: Annotated[str, typer.Argument(help="The agency identifier.")]) -> None:
    """Deactivate an agency and revoke its broker user: its open connections are closed
    and new ones refused. Its history stays, and so does its inbox with whatever is still
    waiting there (re-adding the agency gives it back). Run again, it changes nothing,
    unless the broker still grants the user something (then it revokes that)."""
    if not broker.run(lambda operations: operations.remove_agency(code), _deactivated(code)):
        typer.echo(f"{code} is already deactivated and has no broker access: nothing changed")


def _deactivated(said: str) -> Tell:
    """What a removal tells, ``said`` the name of what was deactivated."""

    def tell(event: Event) -> None:
        if isinstance(event, Deactivated):
            typer.echo(f"{said} deactivated")
        else:
            broker.show(event)

    return tell


@agency_app.command("import")
def agency_import(
    file: Annotated[Path, typer.Argument(help="CSV with the header code,name,parent.")],
) -> None:
    """Import agencies from CSV (UTF-8, comma-separated; parent may be empty), each with
    an inbox (or the gateway that serves it). Idempotent: run it again after fixing
    refused lines. Exit status 1 if any line was refused (the others are imported)."""
    console = Console(stderr=True)
    started = time.perf_counter()
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        async def work(operations: Operations) -> tuple[ImportReport, int]:
            report = await operations.import_agencies(file, advance)
            return report, await _without_broker_user(operations.registry)

        told: list[Event] = []  # said after the import's own lines
        report, without = broker.run(work, told.append)
    elapsed = time.perf_counter() - started
    typer.echo(
        f"{file}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.refused)} refused in {elapsed:.1f} s"
    )
    for line, reason in report.refused:
        typer.echo(f"{file}:{line}: refused: {reason}", err=True)
    for event in told:
        broker.show(event)
    if without:
        typer.echo(
            f"{plural(without, 'agency')} without a broker user: documents to them wait in "
            "their inbox (or go to the gateway that serves them); give one a user with "
            "`backbone agency add CODE --name NAME`, or serve them with "
            "`backbone gateway add NAME --serves PATTERN`"
        )
    if report.refused:
        raise typer.Exit(1)


async def _without_broker_user(registry: Registry) -> int:
    """Active agencies served by their own inbox that have no principal to read it."""
    served = await registry.delivery_queues()
    own = {p.username for p in await registry.list_principals("agency") if p.active}
    active = {a.code for a in await registry.list_agencies()}
    return sum(1 for code in active if served.get(code) == topology.inbox(code) and code not in own)


@gateway_app.command("add")
def gateway_add(
    name: Annotated[str, typer.Argument(help="The gateway's broker user name.")],
    serves: Annotated[list[str], typer.Option(help="A pattern it serves, e.g. '*.*.*.H41'.")],
    password: Annotated[
        str | None, typer.Option(help=PASSWORD_HELP, envvar="BACKBONE_GATEWAY_PASSWORD")
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
    rotate_password: Annotated[bool, typer.Option(help=ROTATE_HELP)] = False,
) -> None:
    """Register a provincial gateway serving every agency its patterns match that has
    no broker user of its own, and its broker user: it may publish to edoc.submit under
    the identifiers it serves and read its gateway queue and their inboxes, nothing
    else. Every input is checked before anything is written; safe to run again."""
    secret = _password(password, password_file)

    def tell(event: Event) -> None:
        if isinstance(event, Registered):
            typer.echo(f"gateway {name} serves {', '.join(serves)}")
        else:
            broker.show(event)

    broker.run(
        lambda operations: operations.add_gateway(
            name, serves, password=secret, rotate=rotate_password
        ),
        tell,
    )


@gateway_app.command("remove")
def gateway_remove(name: Annotated[str, typer.Argument(help="The gateway's name.")]) -> None:
    """Deactivate a gateway and revoke its broker user (connections closed, new ones
    refused). Its queue is unbound: nothing new arrives there, the agencies it served go
    to their own inboxes; what already waits in it stays until an operator moves it or
    the gateway is added again. Run again, it changes nothing."""
    if not broker.run(
        lambda operations: operations.remove_gateway(name), _deactivated(f"gateway {name}")
    ):
        typer.echo(
            f"gateway {name} is already deactivated and has no broker access: nothing changed"
        )


@gateway_app.command("list")
def gateway_list() -> None:
    """List gateways and the patterns they serve."""
    gateways = with_registry(lambda r: r.list_gateways())
    table = Table("gateway", "serves", "active", title=plural(len(gateways), "gateway"))
    for g in gateways:
        table.add_row(
            Text(g.username),
            Text(", ".join(s.pattern for s in g.scopes)),
            "yes" if g.active else "no",
        )
    Console(highlight=False, emoji=False).print(table)
