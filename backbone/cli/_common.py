"""Helpers shared by the command modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from sqlalchemy.exc import DBAPIError

from ..config import get_settings
from ..registry import Registry, RegistryError
from ..store import Store

T = TypeVar("T")


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


def with_registry(work: Callable[[Registry], Awaitable[T]]) -> T:
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
