"""The event loop of the long-running processes (workers, and the benchmark's parties):
uvloop where it is installed.

libuv's loop costs less CPU per message than asyncio's own. It was dropped once (b212219)
for validators whose messages waited on the database until the stop timeout; the cause was
not the loop but the tracker holding SQLite's write lock while its forwards were confirmed,
which it no longer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop if it is installed."""
    try:
        import uvloop
    except ImportError:  # not on this platform
        return asyncio.run(main)
    return uvloop.run(main)
