"""Commands of the pipeline: send, receive, run."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable
from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import aio_pika
import typer
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelNotFoundEntity,
)
from cryptography import x509
from lxml import etree
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .. import edxml, loop, signing
from ..agency import AgencyCode, AgencyCodeError
from ..broker import topology
from ..client import RECEIVE_PREFETCH, AsyncGateway, Delivery, SendError
from ..config import Settings, get_settings
from ..edxml.factory import File, new_document
from ..edxml.models import DSIG_NAMESPACE, NAMESPACE
from ..errors import BackboneError, PackageError
from ..files import write_durably
from ..safe import printable
from ..signing.pki import PrivateKey
from ..store import Store
from ..workers.validator import PREFETCH
from . import app
from ._common import (
    CONNECT_TIMEOUT,
    broker_failure,
    fail,
    load_signer,
    mask,
    os_failure,
    password_from,
    plural,
    quiet_broker_library,
    read_limited,
    warn,
    writable_file,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PASSWORD_VARIABLE = "BACKBONE_PASSWORD"
Signer = tuple[PrivateKey, list[x509.Certificate]]
run_app = typer.Typer(help="Run the backbone's workers.", no_args_is_help=True)
app.add_typer(run_app, name="run")

URL_HELP = (
    "Broker URL [BACKBONE_AMQP_URL, whose user and password are not used unless its user "
    "is the principal]. A password in it shows in the process list: prefer "
    "--password-file or BACKBONE_PASSWORD."
)
PASSWORD_FILE_HELP = (
    "A file whose first line is the principal's broker password "
    "[the password in --url, else BACKBONE_PASSWORD]."
)


# --- the broker, as a principal ---------------------------------------------------------------


def _amqp_url(value: str, where: str) -> SplitResult:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise fail(f"{where} is not a URL") from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise fail(f"{where} is not an amqp:// or amqps:// URL with a host")
    return parts


def _connection(
    url: str | None, user: str | None, principal: str, password_file: Path | None
) -> tuple[str, str]:
    """(URL to connect with, broker user). The broker user is --user, else the user in
    --url, else the agency or gateway; its password comes from --password-file, else
    from the URL (when the URL names that user), else from BACKBONE_PASSWORD, so that it
    need not be on the command line where every user of the machine can read it."""
    explicit = url is not None
    parts = _amqp_url(url, "--url") if url is not None else urlsplit(get_settings().amqp_url)
    in_url = unquote(parts.username) if parts.username else None
    if explicit and in_url and user and in_url != user:
        raise fail(f"--url names the broker user {in_url} and --user {user}: give one")
    username = user or (in_url if explicit else None) or principal
    url_password = (
        unquote(parts.password) if parts.password is not None and in_url == username else None
    )
    if password_file is not None and explicit and url_password is not None:
        raise fail("give the password in --url or in --password-file, not both")
    if password_file is not None:
        password: str | None = password_from(password_file)
    elif url_password is not None:
        password = url_password
    else:
        password = os.environ.get(PASSWORD_VARIABLE)
    if not password:
        raise fail(
            f"no broker password for {username}: give --password-file FILE, set "
            f"{PASSWORD_VARIABLE}, or put it in --url"
        )
    host = parts.netloc.rpartition("@")[2]
    credentials = f"{quote(username, safe='')}:{quote(password, safe='')}"
    return urlunsplit(
        (parts.scheme, f"{credentials}@{host}", parts.path, parts.query, "")
    ), username


# --- send -------------------------------------------------------------------------------------


def _signer(key: Path | None, cert: Path | None) -> Signer | None:
    if key is None and cert is None:
        return None
    if key is None or cert is None:
        raise fail("--key and --cert go together")
    return load_signer(key, cert)


def unique_number(now: datetime) -> str:
    """A document number (CodeNumber) for a send that names none: the time of day to the
    millisecond and four random digits, so that a second send the same day does not
    make the DocumentId ``SENDER,DATE,NUMBER`` of the first (refused as a duplicate)."""
    return f"{now:%H%M%S}{now.microsecond // 1000:03d}{secrets.randbelow(10_000):04d}"


def _agency(value: str, option: str) -> str:
    try:
        return str(AgencyCode.parse(value))
    except AgencyCodeError as exc:
        raise fail(f"{option}: {exc}") from None


def _is_signed(root: etree._Element) -> bool:
    header = f"{{{NAMESPACE}}}edXMLEnvelope/{{{NAMESPACE}}}edXMLHeader"
    return root.find(f"{header}/{{{DSIG_NAMESPACE}}}Signature") is not None


@app.command()
def send(
    file: Annotated[
        Path | None, typer.Argument(help="A package to send (signed, or signed now).")
    ] = None,
    as_: Annotated[str | None, typer.Option("--as", help="The sending agency.")] = None,
    to: Annotated[str | None, typer.Option(help="Recipients, comma-separated identifiers.")] = None,
    subject: Annotated[str | None, typer.Option(help="The subject (trích yếu).")] = None,
    number: Annotated[
        str | None,
        typer.Option(help="The document number (số) [unique: time of day and random digits]."),
    ] = None,
    notation: Annotated[str | None, typer.Option(help="The notation (ký hiệu).")] = None,
    attach: Annotated[
        list[Path] | None, typer.Option(help="A file to attach (repeatable).")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="The sender's private key (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option(help="The sender's certificate and chain (PEM).")
    ] = None,
    unsigned: Annotated[
        bool,
        typer.Option(
            "--unsigned",
            help="Send without a signature (the backbone refuses an unsigned document).",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the package (signed with --key/--cert) to this file; no send."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Broker user [the sending agency].")] = None,
    url: Annotated[str | None, typer.Option(help=URL_HELP)] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
) -> None:
    """Send a document: FILE.edxml, or one built from --as, --to, --subject, --attach.
    Everything is checked here before connecting; prints the DocumentId once the broker
    has confirmed it (or, with --out, once the file is written)."""
    settings = get_settings()
    signer = _signer(key, cert)
    if signer is not None and unsigned:
        raise fail("--unsigned and --key/--cert contradict each other: give one")
    if out is not None:
        writable_file(out)
    if file is not None:
        body, model = _read_package(file, settings, signer, unsigned or out is not None)
    else:
        body, model = _build_package(as_, to, subject, number, notation, attach, settings, signer)
        if signer is None and not (unsigned or out is not None):
            raise fail(
                "the document would go unsigned and be refused: sign it with --key KEY "
                "--cert CERT (backbone pki issue makes them), or give --unsigned"
            )
    document_id = model.document_id or ""
    if out is not None:
        try:
            write_durably(out, body)
        except OSError as exc:
            raise os_failure(out, exc) from None
        typer.echo(document_id)
        typer.echo(f"written to {out}, not sent", err=True)
        return
    connect_url, username = _connection(url, user, as_ or model.sender or "", password_file)

    async def work() -> str:
        async with AsyncGateway(
            connect_url, username=username, limits=settings.limits, connect_timeout=CONNECT_TIMEOUT
        ) as gateway:
            return await gateway.send(body)

    try:
        with quiet_broker_library():
            typer.echo(asyncio.run(work()))
    except (PackageError, SendError) as exc:
        raise fail(mask(str(exc))) from None
    except BackboneError as exc:
        raise broker_failure(exc, connect_url, username) from None


def _read_package(
    file: Path, settings: Settings, signer: Signer | None, may_go_unsigned: bool
) -> tuple[bytes, edxml.Package]:
    """FILE checked as the validator would (parse, schema, rules, sizes), signed if a key
    is given and it is not signed yet."""
    try:
        data = read_limited(file, settings.max_package_bytes)
    except OSError as exc:
        raise os_failure(file, exc, "cannot read") from None
    try:
        root, model = edxml.load_tree(data, settings.limits)
    except PackageError as exc:
        raise fail(f"{file}: invalid: {exc}") from None
    if isinstance(model, edxml.DocumentPackage) and len(model.recipients) > settings.max_recipients:
        raise fail(
            f"{file} names {len(model.recipients)} recipients, over the limit of "
            f"{settings.max_recipients} (BACKBONE_MAX_RECIPIENTS)"
        )
    if _is_signed(root):
        return data, model
    if signer is None:
        if may_go_unsigned:
            return data, model
        raise fail(
            f"{file} is not signed and would be refused: sign it with --key KEY --cert CERT, "
            "or give --unsigned"
        )
    return _signed(data, signer, settings), model


def _signed(package: bytes | edxml.Package, signer: Signer, settings: Settings) -> bytes:
    key, chain = signer
    try:
        return signing.sign(package, key, chain, limits=settings.limits)
    except PackageError as exc:
        raise fail(f"the package cannot be signed: {exc}") from None


def _build_package(
    as_: str | None,
    to: str | None,
    subject: str | None,
    number: str | None,
    notation: str | None,
    attach: list[Path] | None,
    settings: Settings,
    signer: Signer | None,
) -> tuple[bytes, edxml.Package]:
    if not (as_ and to and subject):
        raise fail("give FILE, or --as, --to and --subject")
    sender = _agency(as_, "--as")
    recipients = [_agency(code.strip(), "--to") for code in to.split(",")]
    if len(recipients) > settings.max_recipients:
        raise fail(
            f"--to names {len(recipients)} recipients, over the limit of "
            f"{settings.max_recipients} (BACKBONE_MAX_RECIPIENTS)"
        )
    files = []
    for path in attach or []:
        try:
            size = path.stat().st_size
            if size > settings.max_attachment_bytes:
                raise fail(
                    f"{path}: {size:,} bytes, over the attachment limit of "
                    f"{settings.max_attachment_bytes:,} (BACKBONE_MAX_ATTACHMENT_BYTES)"
                )
            files.append(File(path.name, read_limited(path, settings.max_attachment_bytes)))
        except OSError as exc:
            raise os_failure(path, exc, "cannot read") from None
    now = datetime.now()
    package = new_document(
        sender=sender,
        recipients=recipients,
        subject=subject,
        number=number or unique_number(now),
        notation=notation,
        files=files,
        now=now,
    )
    try:
        body = _signed(package, signer, settings) if signer else edxml.build(package)
    except PackageError as exc:
        raise fail(f"the document cannot be built: {exc}") from None
    if len(body) > settings.max_package_bytes:
        raise fail(
            f"the package is {len(body):,} bytes, over the limit of "
            f"{settings.max_package_bytes:,} (BACKBONE_MAX_PACKAGE_BYTES)"
        )
    return body, package


# --- receive ----------------------------------------------------------------------------------


def _slug(value: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", value)[:limit].strip("._-") or "none"


def file_name(delivery: Delivery) -> str:
    """The file a delivery is saved as, built so that no header or package value can
    steer it: the kind (and status code), a sanitised piece of the DocumentId for the
    reader, and a digest of whose copy it is and of its bytes. Many statuses about one
    document, or one document's copies for the agencies of a gateway, each get a file of
    their own; a redelivered copy gets the same one."""
    package = delivery.package
    if delivery.rejection is not None:
        kind = "rejection"
    elif isinstance(package, edxml.StatusPackage):
        kind = f"status-{_slug(package.header.status_code or '', 4)}"
    else:
        kind = "edoc"
    digest = hashlib.sha256(delivery.recipient.encode("utf-8", "replace") + b"\0" + delivery.body)
    return f"{kind}-{_slug(package.document_id or '', 60)}-{digest.hexdigest()[:16]}.edxml"


def _output_directory(out: Path) -> None:
    """Refuse, before connecting, a directory receive could not save into: every
    delivery would go back to the inbox unsaved."""
    if out.exists() and not out.is_dir():
        raise fail(f"{out}: is a file, --out takes a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe, name = tempfile.mkstemp(dir=out, prefix=".probe-")
        os.close(probe)
        os.unlink(name)
    except OSError as exc:
        raise os_failure(out, exc, "cannot save into this directory") from None


def _shown(value: object, limit: int = 120) -> str:
    return printable(str(value) if value is not None else "-", limit) or "-"


def describe(delivery: Delivery, for_gateway: bool, zone: ZoneInfo) -> str:
    """One line about a delivery: what it is (a status with its code), about which
    document, from whom, for which agency (a gateway's), and when the backbone took it,
    in the configured zone. Every value is bounded and made printable."""
    package = delivery.package
    if isinstance(package, edxml.StatusPackage):
        code = package.header.status_code or ""
        meaning = edxml.STATUS_CODES.get(code, "unknown code")
        line = (
            f"status {_shown(code, 8)} ({meaning}) about {_shown(package.document_id)} "
            f"from {_shown(package.sender, 40)}"
        )
    else:
        line = f"edoc {_shown(package.document_id)} from {_shown(package.sender, 40)}"
    if for_gateway:
        line += f" for {_shown(delivery.recipient, 40)}"
    accepted = delivery.headers.get("x-accepted-at")
    try:
        when = datetime.fromisoformat(str(accepted)[:64])
    except ValueError:
        when = None
    if when is not None and when.tzinfo is not None:
        line += f" at {when.astimezone(zone).isoformat(sep=' ', timespec='seconds')}"
    if delivery.rejection is not None:
        line += (
            f" REJECTED at {_shown(delivery.rejection.get('check'), 40)}: "
            f"{_shown(delivery.rejection.get('code'), 60)}"
        )
    return line


@app.command()
def receive(
    as_: Annotated[
        str | None, typer.Option("--as", help="The agency whose inbox to drain.")
    ] = None,
    gateway: Annotated[str | None, typer.Option(help="Or a gateway's inbox.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many.")] = None,
    timeout: Annotated[float, typer.Option(help="Stop after this many idle seconds.")] = 5.0,
    out: Annotated[
        Path | None,
        typer.Option(help="Save each delivery into this directory (before its status 01)."),
    ] = None,
    key: Annotated[Path | None, typer.Option(help="Key to sign status 01 with (PEM).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Its certificate and chain (PEM).")] = None,
    user: Annotated[str | None, typer.Option(help="Broker user [the agency or gateway].")] = None,
    url: Annotated[str | None, typer.Option(help=URL_HELP)] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
) -> None:
    """Drain an inbox: one line per delivery. With --out each delivery is first stored
    durably; then a document is answered with status 01 and acknowledged. A delivery
    that cannot be saved is said so and left in the inbox."""
    if bool(as_) == bool(gateway):
        raise fail("give --as CODE or --gateway NAME")
    if as_:
        as_ = _agency(as_, "--as")
    if not timeout > 0:
        raise fail("--timeout: give a number of seconds above 0")
    queue = topology.inbox(as_) if as_ else topology.gateway_queue(gateway or "")
    settings = get_settings()
    signer = _signer(key, cert)
    if out is not None:
        _output_directory(out)
    connect_url, username = _connection(url, user, as_ or gateway or "", password_file)
    zone = ZoneInfo(settings.timezone)
    tally = {"document": 0, "status": 0}
    unsaved = 0

    async def work() -> None:
        nonlocal unsaved
        async with (
            AsyncGateway(
                connect_url,
                username=username,
                key=signer[0] if signer else None,
                certificates=signer[1] if signer else (),
                auto_arrived=False,
                limits=settings.limits,
                connect_timeout=CONNECT_TIMEOUT,
            ) as client,
            aclosing(client.receive(queue, timeout=timeout)) as deliveries,
        ):
            async for delivery in deliveries:
                line = describe(delivery, gateway is not None, zone)
                if out is not None:
                    name = file_name(delivery)
                    try:
                        await asyncio.to_thread(write_durably, out / name, delivery.body)
                    except OSError as exc:
                        unsaved += 1
                        typer.echo(
                            f"warning: {line}: not saved as {out / name} "
                            f"({exc.strerror or exc}); left in {queue}",
                            err=True,
                        )
                        if unsaved >= RECEIVE_PREFETCH:  # all it may hold: nothing more comes
                            return
                        continue  # unacknowledged: back to the inbox when this ends
                    line += f" saved as {name}"
                if isinstance(delivery.package, edxml.DocumentPackage):
                    await client.send_status(delivery, "01", "Đã đến")
                await delivery.ack()
                typer.echo(line)
                tally[
                    "status" if isinstance(delivery.package, edxml.StatusPackage) else "document"
                ] += 1
                if count is not None and sum(tally.values()) >= count:
                    return

    try:
        with quiet_broker_library():
            asyncio.run(work())
    except PackageError as exc:
        raise fail(f"a delivery in {queue} is not a valid package (left there): {exc}") from None
    except BackboneError as exc:
        if isinstance(exc.__cause__, ChannelAccessRefused):
            raise fail(f"the broker refused {username} access to {queue}") from None
        if isinstance(exc.__cause__, ChannelNotFoundEntity):
            raise fail(f"there is no queue {queue} on the broker {mask(connect_url)}") from None
        raise broker_failure(exc, connect_url, username) from None
    got = " and ".join(plural(n, noun) for noun, n in tally.items() if n) or "nothing"
    typer.echo(f"{got} received from {queue}", err=True)
    if unsaved:
        raise fail(f"{plural(unsaved, 'delivery')} not saved in {out}, left in {queue}")


# --- run --------------------------------------------------------------------------------------


def _workers_settings(validates: bool = True) -> Settings:
    """The settings the workers run with, once what they need answers: guest (RabbitMQ's
    default administrator) is for a broker on this machine only, as RabbitMQ itself
    allows; a broker that does not answer is an error, a database that does not a
    warning (the workers wait for it)."""
    settings = get_settings()
    host = urlsplit(settings.amqp_url).hostname or ""
    if settings.workers_user == "guest" and host not in LOOPBACK:
        raise fail(
            f"the workers would connect to {host} as guest: outside local development they "
            "need a user of their own, set in BACKBONE_AMQP_URL and created by `backbone init`"
        )
    if validates and settings.trust_bundle is None:
        raise fail("the validator needs BACKBONE_TRUST_BUNDLE (the CA bundle signatures chain to)")
    with quiet_broker_library():
        asyncio.run(_check_services(settings))
    return settings


async def _check_services(settings: Settings) -> None:
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=CONNECT_TIMEOUT)
    except (OSError, AMQPError) as exc:
        raise broker_failure(exc, settings.amqp_url, settings.workers_user) from None
    await connection.close()
    store = Store(settings.database_url)
    threads = threading.active_count()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT), store.transaction() as session:
            await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        why = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200] or type(exc).__name__
        warn(
            f"the database {settings.database_url} does not answer ({why}); "
            "the workers start and wait for it"
        )
    finally:
        await store.close()
        # a failed SQLite connection's thread (aiosqlite's) answers its last call after
        # the failure: with the loop closed, that answer is a traceback on stderr
        for _ in range(100):
            if threading.active_count() <= threads:
                break
            await asyncio.sleep(0.01)


def _running(work: Callable[[], None]) -> None:
    """Run the workers; the broker going away before they are up is one line too."""
    settings = get_settings()
    try:
        work()
    except (OSError, AMQPError) as exc:
        raise broker_failure(exc, settings.amqp_url, settings.workers_user) from None


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
    from ..workers.supervisor import run_processes

    settings = _workers_settings()
    _running(lambda: run_processes(settings, processes, prefetch))


@run_app.command("tracker")
def run_tracker(
    prefetch: Annotated[int, typer.Option(min=1, help="Events in flight.")] = 5000,
) -> None:
    """Record lifecycle events and forward statuses until SIGTERM."""
    from ..workers.supervisor import serve
    from ..workers.tracker import Tracker

    settings = _workers_settings(validates=False)
    _running(lambda: loop.run(serve([Tracker.from_settings(settings, prefetch=prefetch)])))


@run_app.command("all")
def run_all(
    processes: Annotated[int, typer.Option(min=1, help="Validator processes.")] = 1,
    prefetch: Annotated[
        int, typer.Option(min=1, help="Messages in flight per validator.")
    ] = PREFETCH,
) -> None:
    """The validator(s) and the tracker, until SIGTERM."""
    from ..workers.supervisor import run_processes

    settings = _workers_settings()
    _running(lambda: run_processes(settings, processes, prefetch, with_tracker=True))
