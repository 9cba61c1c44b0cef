"""Applying the Alembic migrations (``backbone init``), and generating new ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from .engine import async_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Call outside a running event loop."""
    command.upgrade(alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    """Autogenerate a migration from the models (a developer's tool)."""
    command.revision(alembic_config(url), message=message, autogenerate=True)


@contextmanager
def fresh(kind: str, directory: Path, postgres_admin: str, prefix: str) -> Iterator[str]:
    """A migrated, empty database for tests and benchmarks: a SQLite file in ``directory``,
    or a new PostgreSQL database made through ``postgres_admin`` and dropped afterwards.
    Call it outside a running event loop (migrations run their own)."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / f'{prefix}-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(url)
        yield url
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(execute(postgres_admin, f"CREATE DATABASE {name}"))
    url = postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(execute(postgres_admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def execute(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE)."""
    engine = create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()
