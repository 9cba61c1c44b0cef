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
from sqlalchemy.exc import DBAPIError

from .. import topology
from ..access import Grant, agency_grant, gateway_grant, operators_grant, workers_grant
from ..config import get_settings
from ..mgmt import Management
from ..provisioning import Provisioned
from ..registry import Registry
from ..store import migrate
from ..store.models import Principal
from . import _broker as broker
from . import app
from ._common import fail, with_registry

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
    workers' and the operators' users, the inboxes and grants of registered principals.
    Safe to run again: what already matches is left as it is."""
    settings = get_settings()
    try:
        migrate.upgrade(settings.database_url)
    except (DBAPIError, OSError, ValueError) as exc:
        raise fail(f"cannot set up {settings.database_url}: {exc}") from None
    typer.echo(f"database ready: {settings.database_url}")
    if not broker_:
        return
    principals = [p for p in with_registry(lambda r: r.list_principals()) if p.active]

    async def declare_everything(channel: AbstractChannel) -> None:
        await topology.declare(channel, settings.delivery_limit)
        for principal in principals:
            patterns = [s.pattern for s in principal.scopes]
            if principal.kind == "gateway":
                await topology.declare_gateway(
                    channel, principal.username, patterns, settings.delivery_limit
                )
            else:
                await topology.declare_inbox(channel, principal.username, settings.delivery_limit)

    if not broker.declare("the topology", declare_everything):
        raise typer.Exit(1)
    typer.echo(f"broker ready: topology and {len(principals)} principal inbox(es) declared")
    _internal_users()
    missing = []
    for principal in principals:
        if not broker.has_user(principal.username):
            missing.append(principal.username)
            continue
        done = broker.provision(principal.username, _grant_of(principal))
        if done.changes:
            typer.echo(broker.describe(done))
            _record(done)
    if missing:
        typer.echo(
            f"warning: {len(missing)} principal(s) have no broker user: {', '.join(missing)}; "
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


def _grant_of(principal: Principal) -> Grant:
    if principal.kind == "gateway":
        return gateway_grant(principal.username, [s.pattern for s in principal.scopes])
    return agency_grant(principal.username)


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
    """A broker user of that name that the backbone never provisioned is someone else's:
    taking it over (its tags, its rights) takes an explicit new password."""
    if password is not None or rotate or not broker.has_user(name):
        return
    if not with_registry(lambda r: r.access_history(name)):
        raise fail(
            f"the broker already has a user {name!r} that the backbone did not create; "
            "to make it this principal's, give it a new password with --rotate-password "
            "(or --password)"
        )


PASSWORD_HELP = "Its broker password (default: generated, printed once)."
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
    password: Annotated[str | None, typer.Option(help=PASSWORD_HELP)] = None,
    rotate_password: Annotated[bool, typer.Option(help=ROTATE_HELP)] = False,
) -> None:
    """Register an agency (or rename and re-activate it), with its certificates, and its
    broker user: named by the identifier, it may publish to edoc.submit under that
    identifier only and read its own inbox, nothing else. Safe to run again."""
    certificates = []
    for path in cert or []:
        try:
            certificates.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read the certificate {path}: {exc}") from None
    if principal:
        _reserved(code)

    async def work(registry: Registry) -> None:
        await registry.add_agency(code, name, parent=parent, principal=principal)
        for certificate in certificates:
            await registry.register_certificate(code, certificate)

    with_registry(work)
    typer.echo(
        f"{code} registered ({name})"
        + (f" with {len(certificates)} certificate(s)" if certificates else "")
    )
    if not principal:
        return
    _not_someone_elses(code, password, rotate_password)
    broker.declare(
        f"the inbox of {code}",
        lambda channel: topology.declare_inbox(channel, code, get_settings().delivery_limit),
    )
    done = broker.provision(code, agency_grant(code), password=password, rotate=rotate_password)
    typer.echo(broker.describe(done))
    broker.show_password(done)
    _record(done)


@agency_app.command("list")
def agency_list(
    level: Annotated[int | None, typer.Option(min=1, max=4, help="Only this level.")] = None,
    under: Annotated[str | None, typer.Option(help="Only units below this agency.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include deactivated agencies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List agencies, by level or below a unit."""
    agencies = with_registry(
        lambda r: r.list_agencies(level=level, under=under, include_inactive=all_)
    )
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
                    },
                    ensure_ascii=False,
                )
            )
        return
    table = Table("code", "name", "level", "parent", "active", title=f"{len(agencies)} agencies")
    for a in agencies:
        table.add_row(
            a.code, a.name, str(a.level), a.parent_code or "", "yes" if a.active else "no"
        )
    Console().print(table)


@agency_app.command("remove")
def agency_remove(code: Annotated[str, typer.Argument(help="The agency identifier.")]) -> None:
    """Deactivate an agency and revoke its broker user: its open connections are closed
    and new ones refused. Its history stays, and so does its inbox with whatever is still
    waiting there (re-adding the agency gives it back)."""
    with_registry(lambda r: r.deactivate_agency(code))
    typer.echo(f"{code} deactivated")
    _revoke("agency", code)


def _revoke(kind: str, username: str) -> None:
    revoked = broker.revoke(username)
    queue = broker.inbox_of(kind, username)
    kept = broker.waiting(queue)
    detail = (
        ("broker user deleted" if revoked.user_deleted else "access to the virtual host removed")
        + f", {revoked.closed_connections} open connection(s) closed"
        + (f", {kept} message(s) kept in {queue}" if kept is not None else "")
    )
    typer.echo(f"{username}: {detail}")
    if kept:
        typer.echo(
            f"{queue} keeps {kept} message(s) not yet received; they stay there until the "
            "principal is added again or an operator moves them"
        )
    with_registry(lambda r: r.record_access(username, "revoked", detail, actor=broker.actor()))


@agency_app.command("import")
def agency_import(
    file: Annotated[Path, typer.Argument(help="CSV with the header code,name,parent.")],
) -> None:
    """Import agencies from CSV (parent may be empty). Idempotent: run it again after fixing
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
    if report.refused:
        raise typer.Exit(1)


@gateway_app.command("add")
def gateway_add(
    name: Annotated[str, typer.Argument(help="The gateway's broker user name.")],
    serves: Annotated[list[str], typer.Option(help="A pattern it serves, e.g. '*.*.*.H41'.")],
    password: Annotated[str | None, typer.Option(help=PASSWORD_HELP)] = None,
    rotate_password: Annotated[bool, typer.Option(help=ROTATE_HELP)] = False,
) -> None:
    """Register a provincial gateway serving every agency its patterns match, and its
    broker user: it may publish to edoc.submit under the identifiers it serves and read
    its gateway queue and their inboxes, nothing else. Safe to run again."""
    _reserved(name)
    with_registry(lambda r: r.add_gateway(name, serves))
    _not_someone_elses(name, password, rotate_password)
    typer.echo(f"gateway {name} serves {', '.join(serves)}")
    broker.declare(
        f"the inbox of gateway {name}",
        lambda channel: topology.declare_gateway(
            channel, name, serves, get_settings().delivery_limit
        ),
    )
    done = broker.provision(
        name, gateway_grant(name, serves), password=password, rotate=rotate_password
    )
    typer.echo(broker.describe(done))
    broker.show_password(done)
    _record(done)


@gateway_app.command("remove")
def gateway_remove(name: Annotated[str, typer.Argument(help="The gateway's name.")]) -> None:
    """Deactivate a gateway and revoke its broker user (connections closed, new ones
    refused); its queue and what waits in it stay."""
    with_registry(lambda r: r.remove_gateway(name))
    typer.echo(f"gateway {name} deactivated")
    _revoke("gateway", name)


@gateway_app.command("list")
def gateway_list() -> None:
    """List gateways and the patterns they serve."""
    gateways = with_registry(lambda r: r.list_gateways())
    table = Table("gateway", "serves", "active", title=f"{len(gateways)} gateways")
    for g in gateways:
        table.add_row(
            g.username, ", ".join(s.pattern for s in g.scopes), "yes" if g.active else "no"
        )
    Console().print(table)
