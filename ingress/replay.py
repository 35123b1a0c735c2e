"""The replay guard: the ids of webhooks this ingress process accepted recently.

A webhook whose `{provider}:{event id}:{event type}` is among them is answered 200 again without
a second publish, so that one captured webhook sent many times cannot grow the queues. Only a
webhook the broker confirmed is remembered: one that got a 503 is published again when the
provider retries.
The workers deduplicate on the event id anyway; this only spares the queues.

The memory holds the last `size` ids (HOOKPIPE_REPLAY_MEMORY; 0 turns the guard off), the oldest
forgotten first: a flood of distinct ids costs that many entries (about 180 bytes each, measured
with tracemalloc: 1.8 MB at the default of 10,000) and no more. One webhook sent again and again
is then published at most once per 10,000 others the process accepts in between. Each ingress
process has its own, so behind a load balancer a repeat that reaches another process is published
(and deduplicated by the workers).
"""

from __future__ import annotations

from collections import OrderedDict


class ReplayGuard:
    """The last `size` accepted ids, oldest first."""

    def __init__(self, size: int) -> None:
        self._size = size
        # The first key is the oldest. An OrderedDict forgets it in constant time; a plain dict's
        # first key is found by skipping the slots of the keys deleted before it, a scan that
        # grows till the dict is rebuilt (2.0 µs a webhook against 0.4 µs, at 10,000 ids).
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str) -> bool:
        """Whether `key` was accepted recently."""
        return key in self._seen

    def accepted(self, key: str) -> None:
        """Remember `key`, the broker having confirmed its webhook."""
        if self._size == 0 or key in self._seen:
            return
        if len(self._seen) >= self._size:
            self._seen.popitem(last=False)
        self._seen[key] = None
