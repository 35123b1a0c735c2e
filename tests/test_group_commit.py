"""When a group commit closes its batches: at once when full, after its wait when not, and on
closing; each caller gets its own result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from hookpipe.workers.group_commit import GroupCommit


class Runner:
    """A batch runner that records its batches and, while `hold` is clear, does not finish."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await self.hold.wait()
        return [ValueError(item) if item < 0 else item * 10 for item in items]


async def test_a_full_batch_runs_at_once() -> None:
    runner = Runner()
    group: GroupCommit[int, int] = GroupCommit(runner, size=4, wait=60.0)

    results = await asyncio.wait_for(asyncio.gather(*(group.submit(n) for n in range(4))), 1)

    assert results == [0, 10, 20, 30]
    assert runner.batches == [[0, 1, 2, 3]]


async def test_a_batch_not_full_runs_after_its_wait() -> None:
    runner = Runner()
    group: GroupCommit[int, int] = GroupCommit(runner, size=8, wait=0.05)
    started = time.monotonic()

    results = await asyncio.wait_for(asyncio.gather(*(group.submit(n) for n in range(3))), 5)

    assert results == [0, 10, 20]
    assert runner.batches == [[0, 1, 2]]
    assert time.monotonic() - started >= 0.04


async def test_each_caller_gets_its_own_result_or_error() -> None:
    runner = Runner()
    group: GroupCommit[int, int] = GroupCommit(runner, size=3, wait=60.0)

    results = await asyncio.wait_for(
        asyncio.gather(group.submit(1), group.submit(-1), group.submit(2), return_exceptions=True),
        5,
    )

    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError)


async def test_closing_runs_the_requests_still_gathering() -> None:
    runner = Runner()
    group: GroupCommit[int, int] = GroupCommit(runner, size=8, wait=60.0)
    gathering = [asyncio.create_task(group.submit(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0.01)
    assert runner.batches == []

    await asyncio.wait_for(group.close(), 5)

    assert [await task for task in gathering] == [10, 20, 30]
    assert runner.batches == [[1, 2, 3]]
