"""Real databases: a SQLite file always, and PostgreSQL when it is reachable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backbone.registry import Registry
from backbone.store import Store

from ..databases import migrated, postgres_unreachable


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each engine, shared by the session's tests."""
    if request.param == "postgresql" and (unreachable := postgres_unreachable()):
        pytest.skip(unreachable)
    with migrated(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


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
