"""Real databases: a SQLite file always, and PostgreSQL when it is reachable."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backbone.registry import Registry
from backbone.store import Store, migrate

POSTGRES_ADMIN = os.environ.get(
    "BACKBONE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


async def _admin(statement: str) -> None:
    engine = create_async_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _postgres_reachable() -> str | None:
    try:
        asyncio.run(asyncio.wait_for(_admin("SELECT 1"), timeout=5))
    except Exception as exc:  # any failure means: not here
        return f"PostgreSQL is not reachable at {POSTGRES_ADMIN}: {exc}"
    return None


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each engine, shared by the session's tests."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'backbone.db'}"
        migrate.upgrade(url)
        yield url
        return
    unreachable = _postgres_reachable()
    if unreachable:
        pytest.skip(unreachable)
    name = f"backbone_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    await store.close()


@pytest.fixture
async def registry(store: Store) -> Registry:
    return Registry(store, ttl=0.0)


def unique_code(level1: str = "H41") -> str:
    """A fresh level-3 identifier, so tests sharing a database do not collide."""
    n = uuid.uuid4().int
    return f"000.{n % 90 + 10:02d}.{n // 90 % 90 + 10:02d}.{level1}"


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    return tmp_path / "agencies.csv"
