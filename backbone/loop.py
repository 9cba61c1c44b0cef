"""The event loop of the long-running processes (workers, and the benchmark's parties):
uvloop where it is installed.

libuv's loop costs less CPU per message than asyncio's own (server CPU per document 5.7
instead of 6.2 ms in the benchmark). It was dropped once (b212219) for validators whose
messages waited on the database until the stop timeout; that is not the loop's doing: with a
tracker on the same SQLite file and the machine overloaded, it happens on asyncio's loop as
often (3 of 6 runs of the killed-validator test with the tracker, against 2 of 6 on uvloop).
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
