"""Test databases: a SQLite file, or a fresh PostgreSQL database when the server answers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backbone.store import migrate

POSTGRES_ADMIN = os.environ.get(
    "BACKBONE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


async def admin(statement: str) -> None:
    engine = create_async_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def postgres_unreachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        asyncio.run(asyncio.wait_for(admin("SELECT 1"), timeout=5))
    except Exception as exc:  # any failure means: not here
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN}: {exc}"
    return None


@contextmanager
def migrated(kind: str, directory: Path) -> Iterator[str]:
    """A migrated, empty database of ``kind`` (sqlite or postgresql); dropped afterwards.
    Call it outside a running event loop (migrations run their own)."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / f'backbone-{uuid.uuid4().hex[:8]}.db'}"
        migrate.upgrade(url)
        yield url
        return
    name = f"backbone_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
