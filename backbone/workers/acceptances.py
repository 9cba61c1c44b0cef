"""Group commit for the validator's acceptance records.

Each submission needs its DocumentId recorded before it is routed (check 6). One
transaction per submission costs a commit each; instead, the records that arrive while a
transaction runs go together into the next one. A failure reaches every waiter of that
batch, whose own retry logic then applies.
"""

from __future__ import annotations

import asyncio

from ..store import Store
from ..store import repository as repo


class Acceptances:
    """The validator's acceptance records, committed in groups: ``record`` returns once
    the transaction holding the submission's DocumentId has committed (or raises its
    failure)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[repo.Submission, asyncio.Future[repo.AcceptanceRecord]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def record(self, submission: repo.Submission) -> repo.AcceptanceRecord:
        future: asyncio.Future[repo.AcceptanceRecord] = asyncio.get_running_loop().create_future()
        self._pending.append((submission, future))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    async with self.store.transaction() as session:
                        records = await repo.record_acceptances(session, [s for s, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (_, future), record in zip(batch, records, strict=True):
                        if not future.done():
                            future.set_result(record)
        finally:
            self._flushing = None
