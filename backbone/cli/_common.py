"""Helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path


def read_limited(path: Path, limit: int) -> bytes:
    """Read at most one byte over the limit: the parser refuses it without us holding more."""
    with path.open("rb") as handle:
        return handle.read(limit + 1)
