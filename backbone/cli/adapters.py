"""``backbone adapter``: the adapters for systems that cannot speak AMQP, and the HTTP
adapter's credentials."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from .. import loop
from ..agency import AgencyCode, AgencyCodeError
from ..broker.provisioning import vhost_url
from ..config import get_settings
from ..errors import BackboneError, BrokerError
from ..logs import configure
from ..registry import gateway_name
from ..store import Store
from . import app
from ._common import (
    CONNECT_TIMEOUT,
    broker_failure,
    certificate_agency,
    database_failure,
    fail,
    load_signer,
    password_from,
    quiet_broker_library,
)

adapter_app = typer.Typer(
    help="Adapters for document-management systems that cannot speak AMQP.",
    no_args_is_help=True,
)
credentials_app = typer.Typer(
    help="The HTTP adapter's credentials: who may call it, for which agencies. The secrets "
    "are sealed with BACKBONE_ADAPTER_KEY (make one with `credentials key`).",
    no_args_is_help=True,
)
app.add_typer(adapter_app, name="adapter")
adapter_app.add_typer(credentials_app, name="credentials")
PASSWORD_ENV = "BACKBONE_ADAPTER_PASSWORD"


@adapter_app.command("http")
def http(
    gateway: Annotated[
        str,
        typer.Option(
            help="The gateway the adapter is on the broker (`gateway add NAME --serves ...`)."
        ),
    ],
    password_file: Annotated[
        Path | None,
        typer.Option(help=f"A file holding the gateway's password (else ${PASSWORD_ENV})."),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 8080,
    lock: Annotated[
        float, typer.Option(min=1, max=3600, help="Seconds a peek locks a message by default.")
    ] = 300.0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="TLS: the server's certificate chain (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="TLS: the server's private key (PEM).")
    ] = None,
    signer: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY:CERT",
            help="An agency's private key and certificate (PEM files, the agency the one "
            "its certificate names): the adapter builds and signs documents and statuses "
            "for it, and sends its 01 or 02 when its system acknowledges. Repeatable.",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (`/v1`, `/vdxp`, `/health`, `/metrics`) for the agencies the
    gateway serves, filling the adapter's mailbox from the gateway's queue. Runs until
    SIGTERM or Ctrl-C; what it holds unacknowledged comes back to it on the next start."""
    import uvicorn

    from adapters.http.app import Adapter, AdapterConfig, create_app, serve
    from adapters.http.composing import Signers
    from adapters.http.credentials import CredentialError, Vault

    gateway_name(gateway)
    if (tls_cert is None) != (tls_key is None):
        raise fail("TLS needs both --tls-cert and --tls-key")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise fail(f"cannot read {path}: no such file")
    password = _password(password_file, "the gateway's")
    settings = get_settings()
    configure(settings.log_format or "json", settings.log_level, again=True)  # a service
    try:
        vault = Vault.from_environment()
    except CredentialError as exc:
        raise fail(str(exc)) from None
    config = AdapterConfig(
        settings,
        gateway=gateway,
        amqp_url=vhost_url(settings.amqp_url, settings.vhost, gateway, password),
        lock_seconds=lock,
    )
    adapter = Adapter(config, vault, Signers(_signers(signer or []), settings.limits))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(adapter),
            host=host,
            port=port,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            log_config=None,  # structlog's
            access_log=False,  # a request logs its ids, never its body or headers
            server_header=False,
            lifespan="off",  # serve() runs the adapter around the server
        )
    )

    def exit_soon(*_: object) -> None:  # uvicorn's own handler takes over once it serves
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, exit_soon)
    loop.run(serve(adapter, server))


@adapter_app.command("folder")
def folder(
    root: Annotated[
        Path, typer.Option(help="Where the folders are (created on start): outbox/, inbox/...")
    ],
    as_: Annotated[
        str | None,
        typer.Option("--as", help="The agency it acts for (its broker user and its inbox)."),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(help="Or the gateway it acts as, for every agency the gateway serves."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help=f"A file holding the principal's password (else ${PASSWORD_ENV})."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="The agency's private key, to sign what it sends.")
    ] = None,
    cert: Annotated[
        Path | None, typer.Option(help="Its certificate chain (PEM), with --key.")
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            min=0.2, max=3600, help="Seconds a dropped file must stay unchanged to be taken."
        ),
    ] = 2.0,
    poll: Annotated[
        bool | None,
        typer.Option(
            "--poll/--watch",
            help="Poll the folders (network shares) or watch them with inotify [poll on a "
            "network file system, else watch].",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="With --metrics-port.")] = "127.0.0.1",
) -> None:
    """Exchange documents through folders: send what a system drops in outbox/, write what
    arrives into inbox/, statuses into statuses/. Runs until SIGTERM or Ctrl-C; a restart
    neither sends a file again nor writes a document twice."""
    from prometheus_client import start_http_server

    from adapters.folder.adapter import FolderAdapter, Layout, Metrics
    from adapters.folder.state import State
    from backbone.broker import topology
    from backbone.client import AsyncGateway

    if (as_ is None) == (gateway is None):
        raise fail("give --as CODE (an agency) or --gateway NAME, one of the two")
    if (key is None) != (cert is None):
        raise fail("signing needs both --key and --cert")
    try:
        principal = gateway_name(gateway) if gateway else str(AgencyCode.parse(as_ or ""))
    except AgencyCodeError as exc:
        raise fail(f"--as: {exc}") from None
    queue = topology.gateway_queue(principal) if gateway else topology.inbox(principal)
    password = _password(password_file, "the principal's")
    private, chain = load_signer(key, cert) if key and cert else (None, [])
    metrics = Metrics()
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, metrics_host, registry=metrics.registry)
        except OSError as exc:
            raise fail(f"--metrics-port {metrics_port}: {exc.strerror or exc}") from None
    layout = Layout(root)
    try:
        layout.create()
        state = State(layout.state)
    except OSError as exc:
        raise fail(f"{root}: cannot make its folders: {exc.strerror or exc}") from None
    settings = get_settings()
    configure(settings.log_format or "json", settings.log_level, again=True)  # a service

    url = vhost_url(settings.amqp_url, settings.vhost, principal, password)

    async def run() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        async with AsyncExitStack() as stack:
            try:
                with quiet_broker_library():
                    connected = await stack.enter_async_context(
                        AsyncGateway(
                            url,
                            username=principal,
                            key=private,
                            certificates=chain,
                            auto_arrived=False,  # 01 once the document is written
                            limits=settings.limits,
                            connect_timeout=CONNECT_TIMEOUT,
                        )
                    )
            except BrokerError as exc:
                raise broker_failure(exc, url, principal) from None
            adapter = FolderAdapter(
                layout,
                connected,
                queue,
                state,
                settle=settle,
                poll=network_share(root) if poll is None else poll,
                agency=None if gateway else principal,
                metrics=metrics,
            )
            await adapter.run(stop)

    try:
        loop.run(run())
    finally:
        state.close()


def _password(password_file: Path | None, whose: str) -> str:
    """From the file, else from the environment (never from the command line)."""
    if password_file is not None:
        return password_from(password_file)
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    raise fail(f"{whose} password: give --password-file or set {PASSWORD_ENV}")


def network_share(path: Path) -> bool:
    """Is ``path`` on a network file system, where inotify sees no other client's writes?"""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    where, kind = Path("/"), ""
    resolved = path.resolve()
    for line in mounts:
        parts = line.split()
        deeper = len(parts) >= 3 and len(Path(parts[1]).parts) >= len(where.parts)
        if deeper and resolved.is_relative_to(parts[1]):
            where, kind = Path(parts[1]), parts[2]
    return kind in {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p"}


@adapter_app.command("openapi")
def openapi() -> None:
    """Print the HTTP API's OpenAPI document (YAML), as schemas/openapi.yaml holds it."""
    import yaml

    from adapters.http.app import openapi_document

    typer.echo(yaml.safe_dump(openapi_document(), sort_keys=False, allow_unicode=True), nl=False)


def _credentials(work: Any) -> Any:
    """Run ``work(session, vault)`` in a transaction, with errors a user can act on."""
    from adapters.http.credentials import Vault

    settings = get_settings()

    async def run() -> Any:
        vault = Vault.from_environment()
        store = Store(settings.database_url)
        try:
            async with store.transaction() as session:
                return await work(session, vault)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except BackboneError as exc:
        raise fail(str(exc)) from None
    except (SQLAlchemyError, OSError) as exc:
        raise database_failure(exc, settings.database_url) from None


@credentials_app.command("key")
def key() -> None:
    """Print a new BACKBONE_ADAPTER_KEY (keep it with the adapter's secrets, not in the
    database: without it the stored secrets are useless)."""
    from adapters.http.credentials import Vault

    typer.echo(Vault.new_key())


@credentials_app.command("add")
def add(
    agency: Annotated[
        list[str], typer.Option(help="An agency the credential acts for (repeatable).")
    ],
    label: Annotated[str | None, typer.Option(help="Whose system it is, for the list.")] = None,
) -> None:
    """A new credential: prints its id and its secret, once (the secret is not shown again;
    `rotate` makes a new one)."""
    from adapters.http import credentials

    async def work(session: Any, vault: Any) -> tuple[str, str]:
        return await credentials.add(session, vault, agency, label)

    key_id, secret = _credentials(work)
    typer.echo(f"key id: {key_id}")
    typer.echo(f"secret: {secret}")
    typer.echo("the secret is shown once: give it to the system's operator now", err=True)


@credentials_app.command("list")
def listed() -> None:
    """Every credential, its agencies and whether it is revoked (never a secret)."""
    from adapters.http import credentials

    async def work(session: Any, _: Any) -> list[credentials.Listed]:
        return await credentials.listed(session)

    rows = _credentials(work)
    table = Table("key id", "agencies", "label", "created", "revoked")
    for row in rows:
        table.add_row(
            row.key_id,
            escape(", ".join(row.agencies)),
            escape(row.label or ""),
            row.created_at.strftime("%Y-%m-%d %H:%M"),
            row.revoked_at.strftime("%Y-%m-%d %H:%M") if row.revoked_at else "",
        )
    Console(highlight=False, emoji=False).print(table)


@credentials_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The credential's key id.")]) -> None:
    """Revoke a credential at once (kept in the list, so that what it did stays known)."""
    from adapters.http import credentials

    async def work(session: Any, _: Any) -> bool:
        return await credentials.revoke(session, key_id)

    changed = _credentials(work)
    typer.echo(f"revoked {key_id}" if changed else f"{key_id} was revoked already")


@credentials_app.command("rotate")
def rotate(key_id: Annotated[str, typer.Argument(help="The credential's key id.")]) -> None:
    """A new secret for a credential; the old one stops working at once."""
    from adapters.http import credentials

    async def work(session: Any, vault: Any) -> str:
        return await credentials.rotate(session, vault, key_id)

    secret = _credentials(work)
    typer.echo(f"key id: {key_id}")
    typer.echo(f"secret: {secret}")


def _signers(pairs: list[str]) -> dict[str, Any]:
    """Each ``KEY:CERT`` loaded, by the agency its certificate names."""
    held: dict[str, Any] = {}
    for pair in pairs:
        key, sep, cert = pair.partition(":")
        if not sep or not key or not cert:
            raise fail(f"--signer {pair}: give KEY:CERT (two PEM files)")
        private, chain = load_signer(Path(key), Path(cert))
        agency = certificate_agency(chain[0])
        if agency is None:
            raise fail(f"--signer {pair}: the certificate names no agency (no UID)")
        if agency in held:
            raise fail(f"--signer {pair}: a second key for {agency}")
        held[agency] = (private, chain)
    return held
