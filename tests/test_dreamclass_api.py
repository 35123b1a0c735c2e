"""The DreamClass API client against a local server that plays the DreamClass API."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.settings import Settings
from hookpipe.workers.dreamclass_api import (
    NOT_CONFIGURED,
    DreamClassApi,
    DreamClassApiError,
    DreamClassNotFound,
    parse_retry_after,
)
from hookpipe.workers.errors import PermanentError, TransientError
from tests.dreamclass_fake import API_KEY, TENANT, FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture

# Short waits, so that a test of the retries takes a fraction of a second.
BACKOFF = 0.05
RETRY_BUDGET = 3.0

MakeApi = Callable[..., DreamClassApi]


@pytest.fixture
async def make_api(
    dreamclass_fake: FakeDreamClass, make_settings: Callable[..., Settings]
) -> AsyncIterator[MakeApi]:
    """Clients of the fake: make_api(settings changes..., tries=..., clock=...); closed after."""
    made: list[DreamClassApi] = []

    def make(
        *, tries: int = 3, clock: Callable[[], float] = time.monotonic, **changes: Any
    ) -> DreamClassApi:
        api = DreamClassApi(
            dreamclass_fake.settings(make_settings(), **changes).section(DreamClassSettings),
            tries=tries,
            backoff=BACKOFF,
            retry_budget=RETRY_BUDGET,
            clock=clock,
        )
        made.append(api)
        return api

    try:
        yield make
    finally:
        for api in reversed(made):
            await api.close()


async def test_get_invoice_returns_the_invoice_and_its_payments(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16, currency="EUR")
    dreamclass_fake.add_payment(16, 5, amount="300.50", status=1, method_id=2)

    invoice = await make_api().get_invoice(TENANT, 16)

    assert invoice.id == 16
    assert invoice.currency == "EUR"
    payment = invoice.payment(5)
    assert payment is not None
    assert payment.amount == Decimal("300.50")
    assert payment.status == 1
    assert payment.payment_method_id == 2
    assert invoice.payment(6) is None


async def test_auth_and_tenant_headers_are_sent(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)

    await make_api().get_invoice(TENANT, 16)

    [request] = dreamclass_fake.requests
    assert request.path == "/dreamclassapi/v1/financial/invoices/16"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["tenant"] == TENANT
    assert request.headers["schoolCode"] == TENANT
    assert request.headers["Accept"] == "application/json"


async def test_auth_header_name_and_scheme_are_configurable(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    api = make_api(api_auth_header="X-Api-Key", api_auth_scheme="none")

    with pytest.raises(DreamClassApiError, match="HTTP 401"):
        await api.get_invoice(TENANT, 16)  # the fake wants a bearer token: refused, not retried

    [request] = dreamclass_fake.requests
    assert request.headers["X-Api-Key"] == API_KEY
    assert "Authorization" not in request.headers


async def test_a_500_then_200_is_retried_within_the_call(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", status=500)

    invoice = await make_api().get_invoice(TENANT, 16)

    assert invoice.id == 16
    assert len(dreamclass_fake.requests_of("invoice")) == 2


async def test_a_500_that_persists_raises_transient_error_after_the_tries(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", status=503, times=10)

    with pytest.raises(TransientError, match=r"HTTP 503 \(3 tries\)") as caught:
        await make_api(tries=3).get_invoice(TENANT, 16)

    assert caught.value.retry_after is None
    assert len(dreamclass_fake.requests_of("invoice")) == 3


async def test_a_429_waits_as_long_as_retry_after_says(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", status=429, headers={"Retry-After": "1"})

    invoice = await make_api().get_invoice(TENANT, 16)

    assert invoice.id == 16
    first, second = dreamclass_fake.requests_of("invoice")
    waited = second.at - first.at
    assert 0.95 <= waited < 2.0  # the backoff alone would have waited 0.05 s


async def test_a_retry_after_beyond_the_budget_goes_to_the_broker_retry_at_once(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", status=429, headers={"Retry-After": "120"})

    with pytest.raises(TransientError, match="HTTP 429") as caught:
        await make_api().get_invoice(TENANT, 16)

    assert caught.value.retry_after == 120.0
    assert len(dreamclass_fake.requests_of("invoice")) == 1


async def test_a_404_raises_not_found_without_retrying(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    with pytest.raises(DreamClassNotFound, match="HTTP 404") as caught:
        await make_api().get_invoice(TENANT, 99)

    assert isinstance(caught.value, PermanentError)
    assert caught.value.status == 404
    assert len(dreamclass_fake.requests) == 1


async def test_a_slow_answer_times_out_is_retried_then_raises_transient_error(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", delay=5.0, times=3)

    with pytest.raises(TransientError, match=r"timed out \(3 tries\)"):
        await make_api(api_timeout=0.2, tries=3).get_invoice(TENANT, 16)

    assert len(dreamclass_fake.requests_of("invoice")) == 3


async def test_a_timeout_longer_than_the_retry_budget_still_leaves_room_for_a_retry(
    dreamclass_fake: FakeDreamClass, make_settings: Callable[..., Settings]
) -> None:
    # As with the defaults (5 s per try, 4 s of waits): the first try times out, the second is
    # answered.
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", delay=5.0)
    settings = dreamclass_fake.settings(make_settings(), api_timeout=0.3)

    async with DreamClassApi(
        settings.section(DreamClassSettings), backoff=BACKOFF, retry_budget=0.2
    ) as api:
        invoice = await api.get_invoice(TENANT, 16)

    assert invoice.id == 16
    assert len(dreamclass_fake.requests_of("invoice")) == 2


async def test_a_slow_answer_then_a_quick_one_succeeds(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16)
    dreamclass_fake.script("invoice", delay=5.0)

    invoice = await make_api(api_timeout=0.2).get_invoice(TENANT, 16)

    assert invoice.id == 16
    assert len(dreamclass_fake.requests_of("invoice")) == 2


async def test_an_unreachable_api_raises_transient_error(
    make_settings: Callable[..., Settings],
) -> None:
    # A port that was free a moment ago and that nobody listens on: the connection is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = DreamClassSettings(api_url=f"http://127.0.0.1:{port}", api_key="k")
    async with DreamClassApi(settings, backoff=BACKOFF, retry_budget=RETRY_BUDGET) as api:
        with pytest.raises(TransientError, match="ClientConnectorError"):
            await api.get_invoice(TENANT, 16)


async def test_an_answer_of_the_wrong_shape_is_a_permanent_error(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    dreamclass_fake.add_invoice(16, payments="none")

    with pytest.raises(DreamClassApiError, match=r"unexpected answer.*\$\.payments"):
        await make_api().get_invoice(TENANT, 16)


async def test_payment_methods_are_fetched_by_id(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    methods = await make_api().get_payment_methods(TENANT)

    assert methods[1].label == "Cash"
    assert methods[1].log_only is True
    assert methods[3].label == "Online"
    [request] = dreamclass_fake.requests
    assert request.path == "/dreamclassapi/v1/financial/paymentmethods"
    assert request.headers["tenant"] == TENANT


async def test_payment_methods_are_cached_then_fetched_again_after_the_ttl(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    now = [1000.0]
    api = make_api(payment_methods_ttl=300.0, clock=lambda: now[0])

    await api.get_payment_methods(TENANT)
    now[0] += 299.0
    cached = await api.get_payment_methods(TENANT)
    assert len(dreamclass_fake.requests_of("payment_methods")) == 1  # the second call asked nothing

    dreamclass_fake.payment_methods.append({"id": 9, "name": "Voucher"})
    now[0] += 2.0
    fresh = await api.get_payment_methods(TENANT)

    assert len(dreamclass_fake.requests_of("payment_methods")) == 2
    assert 9 not in cached
    assert fresh[9].label == "Voucher"


async def test_payment_methods_are_cached_per_tenant(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    api = make_api()

    await api.get_payment_methods("school-a")
    await api.get_payment_methods("school-b")
    await api.get_payment_methods("school-a")

    tenants = [r.headers["tenant"] for r in dreamclass_fake.requests_of("payment_methods")]
    assert tenants == ["school-a", "school-b"]


async def test_a_tenant_that_is_no_domain_name_is_refused_before_any_request(
    dreamclass_fake: FakeDreamClass, make_api: MakeApi
) -> None:
    with pytest.raises(DreamClassApiError, match="tenant"):
        await make_api().get_invoice("evil\r\nX-Injected: 1", 16)

    assert dreamclass_fake.requests == []


def test_the_client_refuses_to_start_without_url_and_key(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(PermanentError) as caught:
        DreamClassApi(DreamClassSettings(api_url=None, api_key=None))

    assert str(caught.value) == NOT_CONFIGURED


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)

    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Fri, 14 Mar 2025 09:00:30 GMT", now) == 30.0
    assert parse_retry_after("Fri, 14 Mar 2025 08:59:00 GMT", now) == 0.0  # already past
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("inf", now) is None
    assert parse_retry_after(None, now) is None
