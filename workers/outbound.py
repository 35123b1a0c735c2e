"""Guards for calls to an API outside hookpipe: a rate limit and a circuit breaker.

The rate limit keeps a replay of thousands of dead letters from hammering a school's API: the
calls of one worker process are spaced to at most `rate` a second. The circuit breaker stops
calling an API that keeps failing: after `failures` failures in a row it fails every call at once
(TransientError: the message goes to the broker's delayed retry, holding no worker slot) for
`cooldown` seconds, then lets one call through as a probe; its success closes the circuit again,
its failure opens it for another cooldown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hookpipe.workers.errors import TransientError

Clock = Callable[[], float]


class RateLimit:
    """At most `rate` calls a second (0: no limit), spaced evenly, first come first served."""

    def __init__(self, rate: float, clock: Clock = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._clock = clock
        self._next = 0.0  # when the next call may start, on `clock`
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Return when a call may start."""
        if not self._interval:
            return
        async with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


class CircuitBreaker:
    """Fails calls fast while an API keeps failing; see the module's docstring."""

    def __init__(
        self, name: str, failures: int, cooldown: float, clock: Clock = time.monotonic
    ) -> None:
        self._name = name
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0  # in a row
        self._open_until = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        return self._failures >= self._threshold > 0

    def before(self) -> None:
        """Raise TransientError unless a call may go now (closed, or the one probe)."""
        if not self.open:
            return
        remaining = self._open_until - self._clock()
        if remaining <= 0 and not self._probing:
            self._probing = True
            return
        raise TransientError(
            f"{self._name}: circuit open after {self._failures} failures in a row; "
            f"not called for now",
            retry_after=max(remaining, 0.0) or self._cooldown,
        )

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False

    def failed(self) -> None:
        self._failures += 1
        self._probing = False
        if self.open:
            self._open_until = self._clock() + self._cooldown
