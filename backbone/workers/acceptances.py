"""Group commit for the validator's acceptance records.

Each submission needs its DocumentId recorded before it is routed (check 6). One
transaction per submission costs a commit each; instead, the records that arrive while a
transaction runs go together into the next one (:class:`.grouped.Grouped`). A failure
reaches every waiter of that batch, whose own retry logic then applies.
"""

from __future__ import annotations

from ..store import Store
from ..store import repository as repo
from .grouped import Grouped

MOST = 1000  # records per transaction: above a validator's prefetch, so all that wait


class Acceptances:
    """The validator's acceptance records, committed in groups: ``record`` returns once
    the transaction holding the submission's DocumentId has committed (or raises its
    failure)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._grouped = Grouped(self._commit, MOST)

    async def record(self, submission: repo.Submission) -> repo.AcceptanceRecord:
        (record,) = await self._grouped(submission)
        return record

    async def _commit(self, submissions: list[repo.Submission]) -> list[repo.AcceptanceRecord]:
        async with self.store.transaction() as session:
            return await repo.record_acceptances(session, submissions)
