"""The outbound guards: a circuit breaker that stops calling a failing API and probes it after a
cooldown, and a rate limit that spaces calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.settings import Settings
from hookpipe.workers.dreamclass_api import DreamClassApi
from hookpipe.workers.errors import TransientError
from hookpipe.workers.outbound import CircuitBreaker, RateLimit
from tests.dreamclass_fake import TENANT, FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture


def test_the_breaker_opens_after_the_failures_in_a_row_then_lets_one_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker("API", failures=3, cooldown=10.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.before()
        breaker.failed()

    with pytest.raises(TransientError, match="circuit open after 3 failures") as caught:
        breaker.before()
    assert caught.value.retry_after == 10.0

    now[0] = 10.5
    breaker.before()  # the one probe
    with pytest.raises(TransientError):
        breaker.before()  # no second call while the probe is out
    breaker.succeeded()
    breaker.before()  # closed again


def test_a_failed_probe_opens_the_breaker_for_another_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker("API", failures=1, cooldown=5.0, clock=lambda: now[0])
    breaker.failed()
    now[0] = 6.0
    breaker.before()
    breaker.failed()

    with pytest.raises(TransientError):
        breaker.before()
    now[0] = 11.5
    breaker.before()


def test_a_breaker_of_zero_failures_never_opens() -> None:
    breaker = CircuitBreaker("API", failures=0, cooldown=5.0)
    for _ in range(100):
        breaker.failed()
    breaker.before()


async def test_the_rate_limit_spaces_calls() -> None:
    limit = RateLimit(50.0)
    started = time.monotonic()

    await asyncio.gather(*(limit.wait() for _ in range(11)))

    # The first at once, then ten intervals of 20 ms.
    assert 0.18 <= time.monotonic() - started < 1.0  # the upper bound: a busy machine


async def test_a_failing_dreamclass_api_is_not_called_once_the_breaker_opened(
    dreamclass_fake: FakeDreamClass, make_settings: Callable[..., Settings]
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", status=500, times=100)
    settings = dreamclass_fake.settings(
        make_settings(), api_breaker_failures=4, api_breaker_cooldown=60.0
    ).section(DreamClassSettings)

    async with DreamClassApi(settings, tries=2, backoff=0.01) as api:
        for _ in range(5):
            with pytest.raises(TransientError):
                await api.get_invoice(TENANT, 16)

    # Two calls of two tries reached it; the next three failed at once.
    assert len(dreamclass_fake.requests_of("invoice")) == 4
