"""The databases a part is measured on: SQLite always, PostgreSQL when its server answers
(unless told which)."""

from __future__ import annotations

import asyncio
from typing import Literal

from ...store import migrate

Engine = Literal["sqlite", "postgresql"]
ENGINES: tuple[Engine, ...] = ("sqlite", "postgresql")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFIX = "backbone_bench"  # of each fresh PostgreSQL database (dropped afterwards)


def answers(postgres_url: str) -> bool:
    """Whether the PostgreSQL server at ``postgres_url`` answers within a few seconds."""
    try:
        asyncio.run(asyncio.wait_for(migrate.execute(postgres_url, "SELECT 1"), timeout=5))
    except Exception:  # any failure means: not here
        return False
    return True


def chosen(engines: tuple[Engine, ...] | None, postgres_url: str) -> tuple[Engine, ...]:
    """``engines`` as given, or SQLite and PostgreSQL if it answers."""
    if engines is not None:
        return engines
    return ENGINES if answers(postgres_url) else ("sqlite",)
