"""Group commit: requests that arrive together are served by one call, each getting its own result.

The ledger uses it to apply the events of concurrent handlers in one transaction: a batch closes
when it holds `size` requests, or `wait` seconds after its first, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# What a batch's runner gives back for each request, in order: its result, or the exception
# its caller is to see.
RunBatch = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """Gathers concurrent `submit()` calls into batches for `run`; `close()` runs what is left."""

    def __init__(self, run: RunBatch[T, R], *, size: int, wait: float) -> None:
        if size < 2:
            raise ValueError("a group commit needs batches of at least 2")
        self._run = run
        self._size = size
        self._wait = wait
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """The result of `item` once its batch has run, or the exception it failed with."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
        # A caller cancelled here cancels its future: its item is left out of a batch not yet
        # run, and its result dropped from one that is.
        return await future

    async def close(self) -> None:
        """Run the requests waiting for their batch to close, and wait for every batch."""
        self._flush()
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [(item, future) for item, future in self._pending if not future.done()]
        self._pending = []
        if batch:
            # A task of its own: the batch runs to its end whichever of its callers is cancelled.
            task = asyncio.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            if isinstance(exc, Exception):
                return  # given to every caller: not the task's own failure
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
