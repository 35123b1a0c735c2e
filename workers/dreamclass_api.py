"""The DreamClass REST API client the DreamClass handlers fetch invoices and payment methods with.

One client (one aiohttp ClientSession, one connection pool) per worker process, opened and closed
with the handlers. A call retries a passing failure (5xx, 429, timeout, connection error) a few
times within a small budget, honouring Retry-After; past that it raises TransientError so the
message waits in the broker's delayed retry instead of holding a worker slot.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Final, TypeVar

import aiohttp
import msgspec
import structlog

from hookpipe import personal, tracing
from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.schemas.dreamclass import (
    Invoice,
    PaymentMethod,
    invoice_decoder,
    payment_methods_decoder,
)
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.outbound import CircuitBreaker, RateLimit

T = TypeVar("T")

NOT_CONFIGURED: Final = (
    "DreamClass API not configured: set HOOKPIPE_DREAMCLASS_API_URL and HOOKPIPE_DREAMCLASS_API_KEY"
)

# Tries per call, the first included. A blip is absorbed here; a longer outage goes back to the
# broker's delayed retry, where waiting costs no worker slot.
TRIES: Final = 3
# The most a call waits between its tries, in seconds, all waits together: DreamClass handlers
# should finish well within the shutdown grace period.
RETRY_BUDGET: Final = 4.0
# The wait before the second try when the API named none; it doubles for each further try.
BACKOFF: Final = 0.25

# The tenant comes from the webhook's body, which the signature does not cover: it must be a
# plain DreamClass domain before it goes into a header.
_TENANT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

log = structlog.get_logger()


class DreamClassApiError(PermanentError):
    """The DreamClass API refused a request for good (a 4xx other than 429, or a broken answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DreamClassNotFound(DreamClassApiError):
    """The DreamClass API answered 404: the invoice (or tenant) does not exist, or no longer."""


class DreamClassApi:
    """DreamClass API calls with retries, and payment methods cached per tenant.

    Make it inside the running event loop (it opens an aiohttp ClientSession); close it with
    `close()` or `async with`.
    """

    def __init__(
        self,
        settings: DreamClassSettings,
        *,
        tries: int = TRIES,
        retry_budget: float = RETRY_BUDGET,
        backoff: float = BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.api_url is None or settings.api_key is None:
            raise PermanentError(NOT_CONFIGURED)
        self._base_url = settings.api_url.rstrip("/")
        self._invoice_path = settings.api_invoice_path
        self._payment_methods_path = settings.api_payment_methods_path
        self._methods_ttl = settings.payment_methods_ttl
        self._tries = tries
        self._rate = RateLimit(settings.api_rate)
        self._breaker = CircuitBreaker(
            "DreamClass API", settings.api_breaker_failures, settings.api_breaker_cooldown
        )
        self._retry_budget = retry_budget
        self._backoff = backoff
        self._clock = clock
        # tenant -> (when the cached list expires on `clock`, payment methods by id)
        self._methods: dict[str, tuple[float, Mapping[int, PaymentMethod]]] = {}
        self._methods_locks: dict[str, asyncio.Lock] = {}
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.api_timeout),
            headers={
                "Accept": "application/json",
                settings.api_auth_header: _auth_value(settings.api_auth_scheme, settings.api_key),
            },
        )

    async def close(self) -> None:
        """Close the HTTP session and its connections."""
        await self._session.close()

    async def __aenter__(self) -> DreamClassApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get_invoice(self, tenant: str, invoice_id: int) -> Invoice:
        """GetInvoice: the invoice and its payments.

        Raises DreamClassNotFound on a 404, DreamClassApiError on another 4xx or a broken answer,
        TransientError when the API stays unavailable through the in-call retries.
        """
        path = self._invoice_path.format(invoice_id=invoice_id)
        return await self._get(tenant, path, f"GetInvoice {invoice_id}", invoice_decoder.decode)

    async def get_payment_methods(self, tenant: str) -> Mapping[int, PaymentMethod]:
        """GetPaymentMethods, by id; cached per tenant for the configured TTL.

        Concurrent calls for one tenant share a single request. Raises as `get_invoice` does.
        """
        cached = self._methods.get(tenant)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        lock = self._methods_locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            cached = self._methods.get(tenant)  # another call may have fetched it meanwhile
            if cached is not None and cached[0] > self._clock():
                return cached[1]
            methods = await self._get(
                tenant,
                self._payment_methods_path,
                "GetPaymentMethods",
                payment_methods_decoder.decode,
            )
            by_id: Mapping[int, PaymentMethod] = MappingProxyType({m.id: m for m in methods})
            self._methods[tenant] = (self._clock() + self._methods_ttl, by_id)
            return by_id

    async def _get(self, tenant: str, path: str, what: str, decode: Callable[[bytes], T]) -> T:
        """GET base URL + path for a tenant, retried; the answer decoded with `decode`."""
        with tracing.span(f"dreamclass.api {what}", kind="client"):
            return await self._get_retried(tenant, path, what, decode)

    async def _get_retried(
        self, tenant: str, path: str, what: str, decode: Callable[[bytes], T]
    ) -> T:
        if not _TENANT.fullmatch(tenant):
            raise DreamClassApiError(f"DreamClass {what}: the webhook's tenant is no domain name")
        url = self._base_url + path
        # The DreamClass API takes the school from these headers; the webhook names it `tenant`.
        headers = {"tenant": tenant, "schoolCode": tenant}
        # The budget bounds the waits between tries only: counting the tries' own time too, a
        # timed-out first try (HOOKPIPE_DREAMCLASS_API_TIMEOUT, 5 s) used up the whole 4 s
        # budget, and no call was ever tried twice.
        waited = 0.0
        retry_after: float | None = None
        tries = 0
        while True:
            tries += 1
            retry_after = None
            problem = ""
            self._breaker.before()  # TransientError at once while the API keeps failing
            await self._rate.wait()
            try:
                async with self._session.get(url, headers=headers) as response:
                    status = response.status
                    if 200 <= status < 300:
                        body = await response.read()
                        self._breaker.succeeded()
                        break
                    if status == 429 or status >= 500:
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        problem = f"HTTP {status}"
                    else:
                        self._breaker.succeeded()  # it answers: a refusal, not an outage
                        if status == 404:
                            raise DreamClassNotFound(
                                f"DreamClass {what}: not found (HTTP 404)", status=status
                            )
                        raise DreamClassApiError(
                            f"DreamClass {what}: refused (HTTP {status})", status=status
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
            self._breaker.failed()
            delay = retry_after if retry_after is not None else self._backoff * 2 ** (tries - 1)
            log.warning(
                "dreamclass api call failed",
                call=what,
                problem=problem,
                tries=tries,
                retry_after=retry_after,
            )
            if tries >= self._tries or waited + delay > self._retry_budget:
                raise TransientError(
                    f"DreamClass {what}: {problem} ({tries} tries)", retry_after=retry_after
                )
            await asyncio.sleep(delay)
            waited += delay
        try:
            return decode(body)
        except msgspec.DecodeError as exc:
            # The path in msgspec's message locates the problem; a value it quotes (an invalid
            # enum value) is masked, as the answer may hold personal data.
            problem = personal.mask_text(str(exc), quoted=True)
            raise DreamClassApiError(f"DreamClass {what}: unexpected answer: {problem}") from exc


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds from its two forms (delay-seconds or an HTTP date); None if absent
    or unreadable. A date in the past means no wait."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT, but the parser may leave it naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _auth_value(scheme: str, key: str) -> str:
    """The auth header's value: "<scheme> <key>", or the bare key when the scheme is "none"."""
    if scheme.strip().lower() in ("", "none"):
        return key
    return f"{scheme.strip()} {key}"
