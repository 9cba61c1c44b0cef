"""The ``backbone`` command. Each sub-command has --help and a clear exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import __version__, edxml
from .config import get_settings
from .errors import PackageError
from .logs import configure

app = typer.Typer(
    name="backbone",
    help="Document-exchange backbone: signed edXML packages between agencies over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backbone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    settings = get_settings()
    configure(settings.log_format or "console", settings.log_level)


def _read(path: Path, limit: int) -> bytes:
    """Read at most one byte over the limit: the parser refuses it without us holding more."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


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


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="edXML package files to check.")],
) -> None:
    """Check edXML packages offline: safe parse, schema, semantic rules.

    Prints one line per valid package; for an invalid one, the reasons on stderr.
    Exit status 0 when every file is valid, 1 otherwise.
    """
    limits = get_settings().limits
    failed = 0
    for path in files:
        try:
            package = edxml.load(_read(path, limits.max_package_bytes), limits)
        except OSError as exc:
            failed += 1
            typer.echo(f"{path}: cannot read: {exc.strerror or exc}", err=True)
        except PackageError as exc:
            failed += 1
            typer.echo(f"{path}: invalid: {exc.issues[0]}", err=True)
            for issue in exc.issues[1:]:
                typer.echo(f"{path}:   also {issue}", err=True)
        else:
            typer.echo(f"{path}: valid {summary(package)}")
    raise typer.Exit(1 if failed else 0)


@app.command()
def demo() -> None:
    """Tell the story of one document through the format layer (the pipeline joins later)."""
    from .demo import run

    run()
