"""Commands of the store and registry: init, agency, gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

import typer
from aio_pika.abc import AbstractChannel
from cryptography import x509
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ..broker import topology
from ..broker.access import Grant, agency_grant, gateway_grant, operators_grant, workers_grant
from ..broker.mgmt import Management, ManagementError
from ..broker.provisioning import Provisioned
from ..config import get_settings
from ..registry import Registry, RegistryError, gateway_name
from ..store import migrate
from ..store.models import AccessChange, Agency, Principal
from . import _broker as broker
from . import app
from ._common import checked_password, fail, password_from, plural, with_registry

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
    try:
        migrate.upgrade(settings.database_url)
    except (DBAPIError, OSError, ValueError, ArgumentError) as exc:
        raise fail(f"cannot set up {shown}: {_without(str(exc), settings.database_url)}") from None
    typer.echo(f"database ready: {shown}")
    if not broker_:
        return
    principals = [p for p in with_registry(lambda r: r.list_principals()) if p.active]

    async def declare_everything(channel: AbstractChannel) -> None:
        await topology.declare(channel, settings.delivery_limit)
        for principal in principals:  # a gateway's queue, bound or not, is its to read
            if principal.kind == "gateway":
                await topology.declare_gateway(
                    channel, principal.username, [], settings.delivery_limit
                )

    if not broker.declare("the topology", declare_everything):
        raise typer.Exit(1)
    routes = broker.route()
    if routes is None:
        raise typer.Exit(1)
    for line in routes.lines():
        typer.echo(line)
    typer.echo("broker ready: topology declared, every agency bound to the queue that serves it")
    _internal_users()
    missing = []
    for principal in principals:
        if broker.has_user(principal.username) is False:
            missing.append(principal.username)
            continue
        done = broker.provision(principal.username, grant_of(principal))
        if done.changes:
            typer.echo(broker.describe(done))
            _record(done)
    if missing:
        typer.echo(
            f"warning: {plural(len(missing), 'principal')} without a broker user: "
            f"{', '.join(missing)}; "
            "give each one with `backbone agency add CODE --name NAME` "
            "(or `backbone gateway add NAME --serves PATTERN`)",
            err=True,
        )


def _internal_users() -> None:
    """The workers' user (named, with its password, in BACKBONE_AMQP_URL) and the
    operators' dashboard user."""
    settings = get_settings()
    admin = Management(settings.mgmt_url).username
    workers = settings.workers_user
    if workers == admin:
        typer.echo(
            f"note: the workers connect as {workers}, the administrator: for local development "
            "only; elsewhere give them a user of their own in BACKBONE_AMQP_URL"
        )
    else:
        password = urlsplit(settings.amqp_url).password
        done = broker.provision(
            workers, workers_grant(), password=unquote(password) if password else None
        )
        typer.echo(broker.describe(done) + " (the workers)")
        broker.show_password(done)
        _record(done, "the workers")
    done = broker.provision(settings.operators_user, operators_grant())
    typer.echo(broker.describe(done) + " (the operators' dashboard)")
    broker.show_password(done)
    _record(done, "the operators")


def hide_password(url: str) -> str:
    """A database URL as it may be shown: the password masked (``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "the configured BACKBONE_DATABASE_URL (not a database URL)"


def _without(text: str, url: str) -> str:
    """A library's message with the URL (and so its password) taken out."""
    return text.replace(url, hide_password(url))


def grant_of(principal: Principal) -> Grant:
    """What the registry grants a principal, with the configured user limits."""
    limits = broker.principal_limits()
    if principal.kind == "gateway":
        return gateway_grant(principal.username, [s.pattern for s in principal.scopes], limits)
    return agency_grant(principal.username, limits)


def _record(done: Provisioned, what: str | None = None) -> None:
    """Keep what provisioning changed in the registry's access record."""
    if not done.changes:
        return
    action = (
        "provisioned"
        if done.created
        else "password-rotated"
        if "password set" in done.changes
        else "reconciled"
    )
    detail = ", ".join(done.changes) + (f" ({what})" if what else "")
    with_registry(lambda r: r.record_access(done.username, action, detail, actor=broker.actor()))


def _reserved(name: str) -> None:
    """Principals may not take the names of the backbone's own users."""
    settings = get_settings()
    taken = {
        "guest": "RabbitMQ's default administrator",
        settings.workers_user: "the workers' user",
        settings.operators_user: "the operators' user",
        Management(settings.mgmt_url).username: "the administrator",
    }
    if name in taken:
        raise fail(f"{name!r} is {taken[name]}; choose another name")


def _not_someone_elses(name: str, password: str | None, rotate: bool) -> None:
    """A broker user is this principal's only if the backbone provisioned it as this
    principal. One it provisioned for itself (the workers', the operators', under
    another configuration) is never taken; one it never provisioned is someone else's:
    taking it over (its tags, its rights) takes an explicit new password. Checked before
    anything is written."""
    principal, history = with_registry(lambda r: _principal_and_history(r, name))
    if history and principal is None:
        raise fail(
            f"{name!r} is a broker user the backbone provisioned for itself "
            f"({history[0].detail or history[0].action}); choose another name"
        )
    if history or password is not None or rotate or not broker.has_user(name):
        return
    raise fail(
        f"the broker already has a user {name!r} that the backbone did not create; "
        "to make it this principal's, give it a new password with --rotate-password "
        "(or --password-file)"
    )


async def _principal_and_history(
    registry: Registry, name: str
) -> tuple[Principal | None, list[AccessChange]]:
    return await registry.get_principal(name), await registry.access_history(name)


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
    if principal:
        _reserved(code)
        _not_someone_elses(code, secret, rotate_password)

    async def work(registry: Registry) -> None:
        await registry.add_agency(
            code, name, parent=parent, principal=principal, certificates=certificates
        )

    with_registry(work)
    typer.echo(
        f"{code} registered ({name.strip()})"
        + (f" with {plural(len(certificates), 'certificate')}" if certificates else "")
    )
    if principal:  # its user first: its deliveries move to its inbox only once it can read it
        _provision(code, agency_grant(code, broker.principal_limits()), secret, rotate_password)
    _show_routes(broker.route())


def _provision(name: str, grant: Grant, password: str | None, rotate: bool) -> None:
    """Provision a principal's broker user, say what changed (the password once) and
    record it."""
    done = broker.provision(name, grant, password=password, rotate=rotate)
    typer.echo(broker.describe(done))
    broker.show_password(done)
    _record(done)


def _show_routes(routes: broker.Routes | None) -> None:
    for line in routes.lines() if routes else []:
        typer.echo(line)
    for queue in sorted({q for q, _ in routes.unbound} if routes else set())[:10]:
        kept = broker.waiting(queue)
        if kept:
            typer.echo(
                f"{queue} keeps {plural(kept, 'message')} that arrived before; nothing new arrives "
                "there for the agencies it no longer serves (what serves them now may read it)"
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
    changed = with_registry(lambda r: r.deactivate_agency(code))
    if not changed and not _still_granted(code):
        typer.echo(f"{code} is already deactivated and has no broker access: nothing changed")
        return
    typer.echo(f"{code} deactivated")
    _show_routes(broker.route())
    _revoke("agency", code)


def _revoke(kind: str, username: str) -> None:
    revoked = broker.revoke(username)
    queue = broker.inbox_of(kind, username)
    kept = broker.waiting(queue)
    detail = (
        ("broker user deleted" if revoked.user_deleted else "access to the virtual host removed")
        + f", {plural(revoked.closed_connections, 'open connection')} closed"
        + (f", {plural(kept, 'message')} kept in {queue}" if kept is not None else "")
    )
    typer.echo(f"{username}: {detail}")
    if kept:
        typer.echo(
            f"{queue} keeps {plural(kept, 'message')} not yet received; they stay there until the "
            "principal is added again or an operator moves them"
        )
    with_registry(lambda r: r.record_access(username, "revoked", detail, actor=broker.actor()))


def _still_granted(username: str) -> bool:
    """Does the broker still give ``username`` anything on the virtual host? (True when
    it cannot say: then the revocation is tried, and says why it failed.)"""
    try:
        mgmt = broker.provisioner().mgmt
        return mgmt.permissions(get_settings().vhost, username) is not None
    except ManagementError:
        return True


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

        report = with_registry(lambda r: r.import_csv(file, advance))
    elapsed = time.perf_counter() - started
    typer.echo(
        f"{file}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.refused)} refused in {elapsed:.1f} s"
    )
    for line, reason in report.refused:
        typer.echo(f"{file}:{line}: refused: {reason}", err=True)
    _show_routes(broker.route())
    without = with_registry(_without_broker_user)
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
    try:
        gateway_name(name)
    except RegistryError as exc:
        raise fail(str(exc)) from None
    _reserved(name)
    _not_someone_elses(name, secret, rotate_password)
    with_registry(lambda r: r.add_gateway(name, serves))
    typer.echo(f"gateway {name} serves {', '.join(serves)}")
    broker.declare(  # its queue, even while every agency it covers has an inbox of its own
        f"the queue of gateway {name}",
        lambda channel: topology.declare_gateway(channel, name, [], get_settings().delivery_limit),
    )
    grant = gateway_grant(name, serves, broker.principal_limits())
    _provision(name, grant, secret, rotate_password)  # its user first, then its deliveries
    _show_routes(broker.route())


@gateway_app.command("remove")
def gateway_remove(name: Annotated[str, typer.Argument(help="The gateway's name.")]) -> None:
    """Deactivate a gateway and revoke its broker user (connections closed, new ones
    refused). Its queue is unbound: nothing new arrives there, the agencies it served go
    to their own inboxes; what already waits in it stays until an operator moves it or
    the gateway is added again. Run again, it changes nothing."""
    changed = with_registry(lambda r: r.remove_gateway(name))
    if not changed and not _still_granted(name):
        typer.echo(
            f"gateway {name} is already deactivated and has no broker access: nothing changed"
        )
        return
    typer.echo(f"gateway {name} deactivated")
    _show_routes(broker.route())
    _revoke("gateway", name)


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
