"""Running the services' event loops: on uvloop where it is installed.

uvloop runs the same asyncio programs with a loop written in Cython; the workers, which
spend much of their time in the loop (frames in and out, confirms, timers), use less CPU
per message on it. Without it, the standard loop runs them unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop when it is available."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)
