"""Group work: what arrives while one group is being handled goes together in the next.

The validator commits its acceptance records this way, and every worker publishes its
events this way: under load one commit or one message serves many callers, and an idle
worker waits for nothing (there is no timer). Each caller gets its own item's result
once its group is done, or the group's failure, to which its own retry logic applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Grouped(Generic[T, R]):
    """``handle`` takes a group of items (at most ``most``) and returns one result each."""

    def __init__(self, handle: Callable[[list[T]], Awaitable[list[R]]], most: int) -> None:
        self.handle = handle
        self.most = most
        self.groups = 0  # groups handled
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None
        self._group: list[tuple[T, asyncio.Future[R]]] = []  # the one being handled

    async def __call__(self, *items: T) -> list[R]:
        """The results of ``items``, once the groups holding them are handled."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending += zip(items, futures, strict=True)
        if self._running is None:
            self._running = asyncio.create_task(self._run())
            self._running.add_done_callback(self._ended)
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        while self._pending:
            group, self._pending = self._pending[: self.most], self._pending[self.most :]
            self._group = group
            try:
                results = await self.handle([item for item, _ in group])
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self.groups += 1
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            self._group = []
        self._running = None  # nothing waits: the next caller starts a run

    def _ended(self, run: asyncio.Task[None]) -> None:
        """A run cancelled (the worker stopping, even before it began) leaves nobody
        waiting for ever."""
        if run.cancelled():
            for _, future in self._group + self._pending:
                future.cancel()
            self._group, self._pending, self._running = [], [], None
