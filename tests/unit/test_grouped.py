"""Group work: what arrives while a group runs goes in the next one; failures reach each
caller of their group, and a cancelled run leaves nobody waiting."""

from __future__ import annotations

import asyncio

from backbone.workers.grouped import Grouped


async def test_what_arrives_while_a_group_runs_goes_in_the_next_one() -> None:
    release = asyncio.Event()
    seen: list[list[int]] = []

    async def handle(items: list[int]) -> list[int]:
        seen.append(items)
        await release.wait()
        return [i * 10 for i in items]

    grouped = Grouped(handle, most=3)
    calls = [asyncio.create_task(grouped(n)) for n in range(5)]
    await asyncio.sleep(0)  # the first call starts the run with what is there
    release.set()
    assert [await c for c in calls] == [[0], [10], [20], [30], [40]]
    assert seen == [[0, 1, 2], [3, 4]] and grouped.groups == 2  # at most three at once


async def test_a_failure_reaches_its_group_only() -> None:
    async def handle(items: list[int]) -> list[int]:
        if 1 in items:
            raise RuntimeError("database gone")
        return items

    grouped = Grouped(handle, most=1)
    first, second = grouped(1), grouped(2)
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], RuntimeError) and results[1] == [2]


async def test_a_cancelled_run_leaves_nobody_waiting() -> None:
    async def handle(items: list[int]) -> list[int]:
        await asyncio.Event().wait()  # never answers
        return items

    grouped = Grouped(handle, most=10)
    call = asyncio.create_task(grouped(1))
    await asyncio.sleep(0)
    assert grouped._running is not None
    grouped._running.cancel()
    done, _ = await asyncio.wait([call], timeout=5)
    assert done == {call} and call.cancelled()
