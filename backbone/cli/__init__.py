"""The ``backbone`` command. Each sub-command has --help and a clear exit status."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from .. import __version__, edxml, signing
from ..config import describe, get_settings
from ..errors import BackboneError, PackageError, TrustConfigError
from ..logs import configure
from ._common import fail, read_limited


class _Backbone(TyperGroup):
    """The top-level command: usage errors and anything unexpected end as one line
    ``error: ...`` too (BACKBONE_LOG_LEVEL=DEBUG keeps the traceback of the unexpected)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as exc:  # click's usage and parameter errors
            ctx = getattr(exc, "ctx", None)  # a usage error says which command
            where = f" (see `{ctx.command_path} -h`)" if ctx is not None else ""
            format_message = getattr(exc, "format_message", None)
            message = format_message() if format_message is not None else str(exc)
            code = _error(f"{message}{where}", int(getattr(exc, "exit_code", 2)))
        except typer.Abort:
            code = _error("aborted", 1)
        except BackboneError as exc:  # refused on purpose, in words an operator can act on
            code = _error(str(exc), 1)
        except Exception as exc:
            if os.environ.get("BACKBONE_LOG_LEVEL", "").upper() == "DEBUG":
                raise
            code = _error(f"unexpected {type(exc).__name__}: {exc}", 1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, code: int) -> int:
    fail(message)
    return code


app = typer.Typer(
    cls=_Backbone,
    name="backbone",
    help="Document-exchange backbone: signed edXML packages between agencies over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: "[BACKBONE_AMQP_URL]" is a default, not markup
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backbone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise fail(describe(exc)) from None
    service = ctx.invoked_subcommand == "run"  # workers log JSON lines
    level = (
        "WARNING" if ctx.invoked_subcommand in ("demo", "bench") else settings.log_level
    )  # the story (the figures) speaks
    configure(settings.log_format or ("json" if service else "console"), level)


def summary(package: edxml.Package) -> str:
    """One line that says what a valid package is."""
    if isinstance(package, edxml.StatusPackage):
        code = package.header.status_code
        meaning = edxml.STATUS_CODES.get(code, "?")
        return (
            f"status {code} ({meaning}) from {package.sender} about document {package.document_id}"
        )
    recipients = ", ".join(str(r) for r in package.recipients)
    size = sum(len(a.data) for a in package.attachments)
    return (
        f"edoc from {package.sender} to {recipients} document {package.document_id} "
        f"attachments {len(package.attachments)} ({size} bytes)"
    )


def _verifier(
    trust: Path | None, crls: list[Path], allow_sha1: bool, attribute: str
) -> signing.Verifier | None:
    if trust is None:
        return None
    try:
        store = signing.TrustStore.from_files(trust, crls)
        binding = signing.SubjectBinding(attribute)
    except (TrustConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return signing.Verifier(store, binding, allow_sha1=allow_sha1, limits=get_settings().limits)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="edXML package files to check.")],
    trust: Annotated[
        Path | None,
        typer.Option(help="CA bundle (PEM): also verify each package's signature against it."),
    ] = None,
    crl: Annotated[
        list[Path] | None, typer.Option(help="CRL file to check revocation against (repeatable).")
    ] = None,
    allow_sha1: Annotated[
        bool | None, typer.Option("--allow-sha1", help="Accept legacy SHA-1 signatures.")
    ] = None,
    bind_attribute: Annotated[
        str | None,
        typer.Option(help="Certificate subject attribute holding the agency identifier."),
    ] = None,
) -> None:
    """Check edXML packages offline: safe parse, schema, semantic rules, and with --trust
    the signature (chain, validity, revocation, and that it belongs to the sender).

    Prints one line per valid package; for an invalid one, the reasons on stderr.
    Exit status 0 when every file is valid, 1 otherwise, 2 for unusable trust settings.
    """
    settings = get_settings()
    limits = settings.limits
    verifier = _verifier(
        trust or settings.trust_bundle,
        crl if crl is not None else settings.crl_files,
        settings.allow_sha1 if allow_sha1 is None else allow_sha1,
        bind_attribute or settings.cert_agency_attribute,
    )
    failed = 0
    for path in files:
        try:
            data = read_limited(path, limits.max_package_bytes)
            if verifier is None:
                package, signer = edxml.load(data, limits), ""
            else:
                verified = verifier.verify(data)
                package = edxml.check(verified.package)
                signer = (
                    f" signed by {verified.certificate.subject.rfc4514_string()} "
                    f"(sha256 {verified.fingerprint[:16]}…)"
                )
        except OSError as exc:
            failed += 1
            typer.echo(f"error: cannot read {path}: {exc.strerror or exc}", err=True)
        except PackageError as exc:
            failed += 1
            typer.echo(f"{path}: invalid: {exc.issues[0]}", err=True)
            for issue in exc.issues[1:]:
                typer.echo(f"{path}:   also {issue}", err=True)
        else:
            typer.echo(f"{path}: valid {summary(package)}{signer}")
    raise typer.Exit(1 if failed else 0)


@app.command()
def demo() -> None:
    """Tell the story of documents between a ministry, two provinces and a provincial gateway
    through a real broker and the workers, as it happens."""
    from ..demo import run

    run()


# the command groups register themselves on ``app``
from . import access as _access  # noqa: E402,F401
from . import adapters as _adapters  # noqa: E402,F401
from . import agencies as _agencies  # noqa: E402,F401
from . import bench as _bench  # noqa: E402,F401
from . import node as _node  # noqa: E402,F401
from . import pipeline as _pipeline  # noqa: E402,F401
from . import signatures as _signatures  # noqa: E402,F401
from . import tracking as _tracking  # noqa: E402,F401
