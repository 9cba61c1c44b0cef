"""Test databases: a SQLite file, or a fresh PostgreSQL database when the server answers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backbone.store import migrate

POSTGRES_ADMIN = os.environ.get(
    "BACKBONE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


async def admin(statement: str) -> None:
    await migrate.execute(POSTGRES_ADMIN, statement)


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
    with migrate.fresh(kind, directory, POSTGRES_ADMIN, "backbone_test") as url:
        yield url
