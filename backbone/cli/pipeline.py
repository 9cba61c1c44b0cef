"""Commands of the pipeline: send, receive, run."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer

from .. import edxml, signing, topology
from ..client import AsyncGateway, SendError
from ..config import Settings, get_settings
from ..edxml.factory import File, new_document
from ..errors import BackboneError, PackageError
from ..workers.validator import PREFETCH
from . import app
from ._common import fail, read_limited

LOOPBACK = ("127.0.0.1", "localhost", "::1")
run_app = typer.Typer(help="Run the backbone's workers.", no_args_is_help=True)
app.add_typer(run_app, name="run")


def _signer(key: Path | None, cert: Path | None) -> dict[str, object]:
    if key is None and cert is None:
        return {}
    if key is None or cert is None:
        raise fail("--key and --cert go together")
    try:
        return {
            "key": signing.load_private_key(str(key)),
            "certificates": signing.load_certificates(str(cert)),
        }
    except (OSError, ValueError) as exc:
        raise fail(f"cannot load the signing key or certificate: {exc}") from None


@app.command()
def send(
    file: Annotated[
        Path | None, typer.Argument(help="A package to send (signed, or signed now).")
    ] = None,
    as_: Annotated[str | None, typer.Option("--as", help="The sending agency.")] = None,
    to: Annotated[str | None, typer.Option(help="Recipients, comma-separated identifiers.")] = None,
    subject: Annotated[str | None, typer.Option(help="The subject (trích yếu).")] = None,
    number: Annotated[str, typer.Option(help="The document number (số).")] = "1",
    notation: Annotated[str | None, typer.Option(help="The notation (ký hiệu).")] = None,
    attach: Annotated[
        list[Path] | None, typer.Option(help="A file to attach (repeatable).")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="The sender's private key (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option(help="The sender's certificate and chain (PEM).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="Broker user [the sending agency].")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL [BACKBONE_AMQP_URL].")] = None,
) -> None:
    """Send a document: FILE.edxml, or one built from --as, --to, --subject, --attach.
    Prints the DocumentId once the broker has confirmed it."""
    settings = get_settings()
    signer = _signer(key, cert)
    if file is not None:
        try:
            package: object = read_limited(file, settings.max_package_bytes)
        except OSError as exc:
            raise fail(f"cannot read {file}: {exc.strerror}") from None
    else:
        if not (as_ and to and subject):
            raise fail("give FILE, or --as, --to and --subject")
        files = []
        for path in attach or []:
            try:
                files.append(File(path.name, path.read_bytes()))
            except OSError as exc:
                raise fail(f"cannot read {path}: {exc.strerror}") from None
        package = new_document(
            sender=as_,
            recipients=[c.strip() for c in to.split(",")],
            subject=subject,
            number=number,
            notation=notation,
            files=files,
            promulgated=date.today(),
        )

    async def work() -> str:
        username = user or as_ or _sender_of(package)
        async with AsyncGateway(url or settings.amqp_url, username=username, **signer) as gateway:
            return await gateway.send(package)  # type: ignore[arg-type]

    try:
        typer.echo(asyncio.run(work()))
    except (PackageError, SendError, BackboneError) as exc:
        raise fail(str(exc)) from None
    except (OSError, ConnectionError) as exc:
        raise fail(f"cannot reach the broker: {exc}") from None


def _sender_of(package: object) -> str:
    if isinstance(package, bytes):
        return edxml.parse(package).sender or ""
    return getattr(package, "sender", "") or ""


@app.command()
def receive(
    as_: Annotated[
        str | None, typer.Option("--as", help="The agency whose inbox to drain.")
    ] = None,
    gateway: Annotated[str | None, typer.Option(help="Or a gateway's inbox.")] = None,
    count: Annotated[int | None, typer.Option(help="Stop after this many.")] = None,
    timeout: Annotated[float, typer.Option(help="Stop after this many idle seconds.")] = 5.0,
    out: Annotated[Path | None, typer.Option(help="Save each package into this directory.")] = None,
    key: Annotated[Path | None, typer.Option(help="Key to sign status 01 with (PEM).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Its certificate and chain (PEM).")] = None,
    user: Annotated[str | None, typer.Option(help="Broker user [the agency or gateway].")] = None,
    url: Annotated[str | None, typer.Option(help="Broker URL [BACKBONE_AMQP_URL].")] = None,
) -> None:
    """Drain an inbox: one line per delivery, status 01 sent for each document."""
    if bool(as_) == bool(gateway):
        raise fail("give --as CODE or --gateway NAME")
    queue = topology.inbox(as_) if as_ else topology.gateway_queue(gateway or "")
    settings = get_settings()
    signer = _signer(key, cert)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    async def work() -> int:
        received = 0
        username = user or as_ or gateway or ""
        async with AsyncGateway(url or settings.amqp_url, username=username, **signer) as client:
            async for delivery in client.receive(queue, timeout=timeout, count=count):
                package = delivery.package
                line = f"{package.kind} {package.document_id} from {package.sender}"
                if delivery.rejection:
                    line += (
                        f" REJECTED at {delivery.rejection['check']}: {delivery.rejection['code']}"
                    )
                if out is not None:
                    name = (
                        delivery.backbone_id
                        or delivery.headers.get("x-rejected-message-id")
                        or str(received)
                    )
                    (out / f"{name}.edxml").write_bytes(delivery.body)
                typer.echo(line)
                await delivery.ack()
                received += 1
        return received

    try:
        received = asyncio.run(work())
    except (OSError, ConnectionError, BackboneError) as exc:
        raise fail(f"cannot receive from {queue}: {exc}") from None
    typer.echo(f"{received} received from {queue}", err=True)


def _workers_settings() -> Settings:
    """The settings the workers run with; guest (RabbitMQ's default administrator) is for a
    broker on this machine only, as RabbitMQ itself allows."""
    settings = get_settings()
    host = urlsplit(settings.amqp_url).hostname or ""
    if settings.workers_user == "guest" and host not in LOOPBACK:
        raise fail(
            f"the workers would connect to {host} as guest: outside local development they "
            "need a user of their own, set in BACKBONE_AMQP_URL and created by `backbone init`"
        )
    return settings


@run_app.command("validator")
def run_validator(
    processes: Annotated[int, typer.Option(min=1, help="Validator processes.")] = 1,
    prefetch: Annotated[
        int,
        typer.Option(
            min=1, help="Messages in flight per process (as many packages may be in memory)."
        ),
    ] = PREFETCH,
) -> None:
    """Validate and route submissions until SIGTERM (in-flight messages are finished)."""
    from ..workers.validator import run_processes

    run_processes(_workers_settings(), processes, prefetch)


@run_app.command("tracker")
def run_tracker(
    prefetch: Annotated[int, typer.Option(min=1, help="Events in flight.")] = 5000,
) -> None:
    """Record lifecycle events and forward statuses until SIGTERM."""
    from ..workers.tracker import serve

    asyncio.run(serve(_workers_settings(), prefetch))


@run_app.command("all")
def run_all(
    processes: Annotated[int, typer.Option(min=1, help="Validator processes.")] = 1,
    prefetch: Annotated[
        int, typer.Option(min=1, help="Messages in flight per validator.")
    ] = PREFETCH,
) -> None:
    """The validator(s) and the tracker, until SIGTERM."""
    from ..workers.validator import run_processes

    run_processes(_workers_settings(), processes, prefetch, with_tracker=True)
