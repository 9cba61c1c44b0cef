"""Running workers as a service: until SIGTERM or SIGINT, then stopping cleanly; several
validator processes side by side.

``backbone run validator|tracker|all`` calls these; tests and the demo use the workers'
``running()`` directly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from .. import loop
from ..config import Settings
from .publisher import load_signer
from .tracker import Tracker
from .unroutable import Unroutable
from .validator import Validator
from .worker import Worker

CHILD_STOP_TIMEOUT = 35.0  # seconds a spawned validator gets after SIGTERM (STOP_TIMEOUT + 5)


async def serve(workers: Sequence[Worker]) -> None:
    """Run ``workers`` until SIGTERM or SIGINT (or until one fails: raised here, so that
    the process ends and is restarted). All stop consuming at once; then each finishes
    what it holds (the rest is redelivered) and closes its connection and store."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        async with AsyncExitStack() as stack:
            for worker in workers:
                await stack.enter_async_context(worker.running())
            waits: list[asyncio.Future[Any]] = [stopped]
            waits += [w.failed for w in workers if w.failed is not None]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*(worker.stop_consuming() for worker in workers))
    finally:
        stopped.cancel()
    for worker in workers:
        if worker.failed is not None and worker.failed.done():
            worker.failed.result()  # raises what the worker failed with


def validators(settings: Settings, prefetch: int, with_tracker: bool = False) -> list[Worker]:
    """One validator with the consumer of undeliverable copies beside it (and the tracker)."""
    workers: list[Worker] = [
        Validator.from_settings(settings, prefetch=prefetch),
        Unroutable(settings, load_signer(settings)),
    ]
    if with_tracker:
        workers.append(Tracker.from_settings(settings))
    return workers


def run_processes(
    settings: Settings, processes: int, prefetch: int, *, with_tracker: bool = False
) -> None:
    """``processes`` validators, each in its own process (one here, the rest spawned); the
    tracker, if asked, beside the validator of this process."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_child, args=(settings.model_dump(), prefetch), daemon=True)
        for _ in range(processes - 1)
    ]
    for child in children:
        child.start()
    try:
        loop.run(serve(validators(settings, prefetch, with_tracker)))
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(timeout=CHILD_STOP_TIMEOUT)


def _child(values: dict[str, object], prefetch: int) -> None:
    from ..logs import configure

    settings = Settings.model_validate(values)
    configure("json", settings.log_level)
    loop.run(serve(validators(settings, prefetch)))


__all__ = ["run_processes", "serve", "validators"]
