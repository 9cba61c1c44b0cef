"""Commands of the store and registry: init, agency, gateway."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import aio_pika
import typer
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError
from cryptography import x509
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from .. import topology
from ..config import get_settings
from ..registry import Registry, RegistryError
from ..store import Store, migrate
from . import app
from ._common import database_failure, fail

T = TypeVar("T")

agency_app = typer.Typer(
    help="Register, list, deactivate and import agencies.", no_args_is_help=True
)
gateway_app = typer.Typer(
    help="Provincial gateways serving patterns of agencies.", no_args_is_help=True
)
app.add_typer(agency_app, name="agency")
app.add_typer(gateway_app, name="gateway")


def _with_registry(work: Callable[[Registry], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database, with errors a user can act on."""
    settings = get_settings()

    async def run() -> T:
        store = Store(settings.database_url)
        try:
            return await work(Registry(store, ttl=settings.registry_ttl))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except RegistryError as exc:
        raise fail(str(exc)) from None
    except DBAPIError as exc:
        raise database_failure(exc, settings.database_url) from None
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None


def _declare(what: str, work: Callable[[AbstractChannel], Awaitable[None]]) -> bool:
    """Declare on the configured broker; a warning (not a failure) if it is unreachable."""
    settings = get_settings()

    async def run() -> None:
        connection = await aio_pika.connect(settings.amqp_url, timeout=10)
        try:
            await work(await connection.channel())
        finally:
            await connection.close()

    try:
        asyncio.run(run())
    except (TimeoutError, OSError, ConnectionError, AMQPError) as exc:
        typer.echo(
            f"warning: {what} not declared, the broker is unreachable ({exc}); "
            "run `backbone init` once it is up",
            err=True,
        )
        return False
    return True


@app.command()
def init(
    broker: Annotated[bool, typer.Option(help="Also declare the AMQP topology.")] = True,
) -> None:
    """Set up the database (every migration) and the broker (exchanges, queues, the inboxes
    of registered principals). Safe to run again."""
    settings = get_settings()
    try:
        migrate.upgrade(settings.database_url)
    except (DBAPIError, OSError, ValueError) as exc:
        raise fail(f"cannot set up {settings.database_url}: {exc}") from None
    typer.echo(f"database ready: {settings.database_url}")
    if not broker:
        return
    principals = _with_registry(lambda r: r.list_principals())

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

    if not _declare("the topology", declare_everything):
        raise typer.Exit(1)
    typer.echo(f"broker ready: topology and {len(principals)} principal inbox(es) declared")


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
) -> None:
    """Register an agency (or rename and re-activate it), with its certificates."""
    certificates = []
    for path in cert or []:
        try:
            certificates.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise fail(f"cannot read the certificate {path}: {exc}") from None

    async def work(registry: Registry) -> None:
        await registry.add_agency(code, name, parent=parent, principal=principal)
        for certificate in certificates:
            await registry.register_certificate(code, certificate)

    _with_registry(work)
    if principal:
        _declare(
            f"the inbox of {code}",
            lambda channel: topology.declare_inbox(channel, code, get_settings().delivery_limit),
        )
    typer.echo(
        f"{code} registered ({name})"
        + (f" with {len(certificates)} certificate(s)" if certificates else "")
    )


@agency_app.command("list")
def agency_list(
    level: Annotated[int | None, typer.Option(min=1, max=4, help="Only this level.")] = None,
    under: Annotated[str | None, typer.Option(help="Only units below this agency.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include deactivated agencies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List agencies, by level or below a unit."""
    agencies = _with_registry(
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
    """Deactivate an agency: it can no longer send or receive; its history stays."""
    _with_registry(lambda r: r.deactivate_agency(code))
    typer.echo(f"{code} deactivated")


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

        report = _with_registry(lambda r: r.import_csv(file, advance))
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
) -> None:
    """Register a provincial gateway serving every agency its patterns match."""
    _with_registry(lambda r: r.add_gateway(name, serves))
    _declare(
        f"the inbox of gateway {name}",
        lambda channel: topology.declare_gateway(
            channel, name, serves, get_settings().delivery_limit
        ),
    )
    typer.echo(f"gateway {name} serves {', '.join(serves)}")


@gateway_app.command("list")
def gateway_list() -> None:
    """List gateways and the patterns they serve."""
    gateways = _with_registry(lambda r: r.list_gateways())
    table = Table("gateway", "serves", "active", title=f"{len(gateways)} gateways")
    for g in gateways:
        table.add_row(
            g.username, ", ".join(s.pattern for s in g.scopes), "yes" if g.active else "no"
        )
    Console().print(table)
