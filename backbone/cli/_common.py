"""Helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.exc import DBAPIError


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most one byte over the limit: the parser refuses it without us holding more."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)


def fail(message: str) -> typer.Exit:
    """Say what went wrong on stderr; the caller raises the returned exit (status 1)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def database_failure(exc: DBAPIError, url: str) -> typer.Exit:
    """A database error in words an operator can act on."""
    text = str(exc.orig)
    if "no such table" in text or "does not exist" in text:
        return fail(f"the database {url} is not set up: run `backbone init`")
    return fail(f"database error: {text}")
