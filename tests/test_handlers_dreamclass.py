"""DreamClass handlers on both ledgers, against a local server that plays the DreamClass API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers.dreamclass_api import NOT_CONFIGURED, DreamClassApi, DreamClassNotFound
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.handlers import dreamclass, open_handlers
from hookpipe.workers.handlers.base import Handler
from hookpipe.workers.ledger import Ledger, Payment
from tests.conftest import fixture_bytes
from tests.dreamclass_fake import TENANT, FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture
from tests.handler_support import delivery, stored_text
from tests.handler_support import ledger as ledger  # the fixture

SEED = "dreamclass.PAYMENT_CREATED.json"
SEED_ID = "214fb720-2248-44e0-9bfd-72171f9e72de"
SEED_TIME = 1727885313393
PAYMENT_ID = "5"


def webhook(
    event_type: str = "PAYMENT_CREATED",
    event_id: str = SEED_ID,
    timestamp: int = SEED_TIME,
    data: dict[str, Any] | None = None,
    **data_changes: Any,
) -> bytes:
    """The seed webhook with another type, id, timestamp or data."""
    body = orjson.loads(fixture_bytes(SEED))
    body.update(type=event_type, id=event_id, timestamp=timestamp)
    if data is not None:
        body["data"] = data
    body["data"].update(data_changes)
    return orjson.dumps(body)


@pytest.fixture
async def api(
    dreamclass_fake: FakeDreamClass, make_settings: Callable[..., Settings]
) -> AsyncIterator[DreamClassApi]:
    """A client of the fake, with short in-call retries."""
    client = DreamClassApi(
        dreamclass_fake.settings(make_settings()).section(DreamClassSettings), backoff=0.05
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def handle(ledger: Ledger, api: DreamClassApi) -> Callable[[bytes], Any]:
    """Deliver a DreamClass webhook to the handler of its queue."""
    handlers = dreamclass.payment_handlers(ledger, api)

    async def deliver(body: bytes) -> None:
        envelope = orjson.loads(body)
        queue = f"dreamclass.{envelope['type']}"
        await handlers[queue](delivery(queue, body, envelope["id"]))

    return deliver


async def payment(ledger: Ledger) -> Payment:
    found = await ledger.get("dreamclass", PAYMENT_ID)
    assert found is not None
    return found


def test_every_dreamclass_queue_has_a_handler(ledger: Ledger) -> None:
    handled: dict[str, Handler] = dreamclass.payment_handlers(ledger, None)

    assert sorted(handled) == sorted(q for q in handled_queues() if q.startswith("dreamclass."))


async def test_the_seed_is_recorded_from_what_the_api_says(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_invoice(16, currency="EUR")
    # The API's amount differs from the webhook's 300: the API is the one trusted.
    dreamclass_fake.add_payment(16, 5, amount="312.50", status=1, method_id=2)

    await handle(fixture_bytes(SEED))

    recorded = await payment(ledger)
    assert recorded.status == "paid"
    assert recorded.amount == Decimal("312.50")
    assert recorded.currency == "EUR"
    assert recorded.events == (f"{SEED_ID}:PAYMENT_CREATED",)
    assert recorded.version is None  # the webhook's timestamp orders nothing
    assert recorded.details["invoice_id"] == 16
    assert recorded.details["invoice_number"] == "INV-00016"
    assert recorded.details["tenant"] == TENANT
    assert recorded.details["status_code"] == 1
    assert recorded.details["payment_method"] == {
        "id": 2,
        "name": "Bank Transfer",
        "log_only": True,
    }
    paths = [r.path for r in dreamclass_fake.requests]
    assert paths == [
        "/dreamclassapi/v1/financial/invoices/16",
        "/dreamclassapi/v1/financial/paymentmethods",
    ]


@pytest.mark.parametrize(
    ("code", "status"), [(1, "paid"), (2, "invalid"), (3, "pending"), (4, "refunded")]
)
async def test_status_codes_map_to_the_ledger(
    ledger: Ledger,
    dreamclass_fake: FakeDreamClass,
    handle: Callable[[bytes], Any],
    code: int,
    status: str,
) -> None:
    dreamclass_fake.add_payment(16, 5, status=code)

    await handle(fixture_bytes(SEED))

    assert (await payment(ledger)).status == status


async def test_fields_the_api_leaves_out_are_not_taken_from_the_webhook(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    listed = dreamclass_fake.add_payment(16, 5, status=3)
    del listed["amount"], listed["createdAt"]
    dreamclass_fake.payment_methods = []  # GetPaymentMethods does not know method 1

    await handle(fixture_bytes(SEED))

    recorded = await payment(ledger)
    assert recorded.status == "pending"
    assert recorded.amount is None  # the webhook says 300, but it is not signed
    assert "created_at" not in recorded.details
    assert recorded.details["payment_method"] == {"id": 1, "name": None, "log_only": None}


async def test_no_status_from_the_api_nor_the_webhook_is_a_permanent_error(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=None)

    with pytest.raises(PermanentError, match="no status for payment 5"):
        await handle(fixture_bytes(SEED))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_a_status_in_the_webhook_does_not_fill_in_for_the_api(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=None)

    with pytest.raises(PermanentError, match="no status for payment 5"):
        await handle(webhook(status=4))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_no_personal_data_is_stored(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, privateNotes="Paid by Maria Papadopoulou, +30 210 1234")

    await handle(webhook(publicNotes="Receipt to ana@example.com", privateNotes="Ana, 6912345678"))

    text = stored_text(await payment(ledger))
    for personal in (b"Sample note", b"front desk", b"Maria", b"ana@example.com", b"6912345678"):
        assert personal not in text


async def test_the_same_event_twice_changes_nothing(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1)
    await handle(fixture_bytes(SEED))
    before = await payment(ledger)

    dreamclass_fake.add_payment(16, 5, status=4)  # even if the API changed meanwhile
    await handle(fixture_bytes(SEED))

    assert await payment(ledger) == before


async def test_a_late_event_records_what_the_api_shows_when_it_is_handled(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=4, amount="300.00")
    await handle(webhook("PAYMENT_UPDATED", "evt-update", SEED_TIME + 60_000))

    # The creation arrives late, with an earlier timestamp: the API is asked again, and what it
    # shows now is the state, whatever either webhook's timestamp says.
    dreamclass_fake.add_payment(16, 5, status=1, amount="310.00")
    await handle(webhook("PAYMENT_CREATED", "evt-create", SEED_TIME))

    recorded = await payment(ledger)
    assert recorded.status == "paid"
    assert recorded.amount == Decimal("310.00")
    assert recorded.events == ("evt-update:PAYMENT_UPDATED", "evt-create:PAYMENT_CREATED")


async def test_an_update_records_the_new_state(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=3)
    await handle(webhook("PAYMENT_CREATED", "evt-create", SEED_TIME))
    dreamclass_fake.add_payment(16, 5, status=1)
    await handle(webhook("PAYMENT_UPDATED", "evt-update", SEED_TIME + 1))

    recorded = await payment(ledger)
    assert recorded.status == "paid"
    assert recorded.events == ("evt-create:PAYMENT_CREATED", "evt-update:PAYMENT_UPDATED")


async def test_a_deletion_after_the_creation_marks_it_deleted(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1, amount="300.00")
    await handle(webhook("PAYMENT_CREATED", "evt-create", SEED_TIME))
    dreamclass_fake.invoices[16]["payments"] = []

    await handle(webhook("PAYMENT_DELETED", "evt-delete", SEED_TIME + 5_000))

    recorded = await payment(ledger)
    assert recorded.status == "deleted"
    assert recorded.amount == Decimal("300.00")
    assert recorded.currency == "EUR"
    assert recorded.details["invoice_id"] == 16
    assert recorded.events == ("evt-create:PAYMENT_CREATED", "evt-delete:PAYMENT_DELETED")


async def test_a_deletion_before_the_creation_still_wins(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_invoice(16)  # the payment is gone already

    await handle(webhook("PAYMENT_DELETED", "evt-delete", SEED_TIME + 5_000))
    await handle(webhook("PAYMENT_CREATED", "evt-create", SEED_TIME))

    recorded = await payment(ledger)
    assert recorded.status == "deleted"
    assert recorded.amount is None  # never seen in the API; the webhook's is not signed
    assert recorded.events == ("evt-delete:PAYMENT_DELETED", "evt-create:PAYMENT_CREATED")


async def test_a_deletion_with_only_the_payment_id_uses_the_recorded_invoice(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1)
    await handle(webhook("PAYMENT_CREATED", "evt-create", SEED_TIME))
    dreamclass_fake.invoices.clear()  # the invoice was deleted with its payment: 404

    await handle(webhook("PAYMENT_DELETED", "evt-delete", SEED_TIME + 1, data={"id": 5}))

    recorded = await payment(ledger)
    assert recorded.status == "deleted"
    assert dreamclass_fake.requests[-1].path == "/dreamclassapi/v1/financial/invoices/16"


async def test_a_deletion_that_cannot_be_confirmed_is_not_recorded(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    with pytest.raises(PermanentError, match="cannot be confirmed"):
        await handle(webhook("PAYMENT_DELETED", "evt-delete", data={"id": 5}))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None
    assert dreamclass_fake.requests == []


async def test_a_deletion_the_api_does_not_show_yet_is_retried(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1)

    with pytest.raises(TransientError, match="still lists payment 5"):
        await handle(webhook("PAYMENT_DELETED", "evt-delete"))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_a_payment_the_api_does_not_list_yet_is_retried(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_invoice(16)

    with pytest.raises(TransientError, match="does not list payment 5"):
        await handle(fixture_bytes(SEED))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_an_invoice_the_api_does_not_know_is_a_permanent_error(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    with pytest.raises(DreamClassNotFound, match="GetInvoice 16"):
        await handle(fixture_bytes(SEED))

    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_an_api_500_raises_transient_error_after_the_in_call_retries(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1)
    dreamclass_fake.script("invoice", status=500, times=10)

    with pytest.raises(TransientError, match=r"HTTP 500 \(3 tries\)"):
        await handle(fixture_bytes(SEED))

    assert len(dreamclass_fake.requests_of("invoice")) == 3
    assert await ledger.get("dreamclass", PAYMENT_ID) is None


@pytest.mark.parametrize("event_type", ["PAYMENT_CREATED", "PAYMENT_UPDATED", "PAYMENT_DELETED"])
async def test_without_the_api_configured_every_event_is_a_permanent_error(
    ledger: Ledger, event_type: str
) -> None:
    handlers = dreamclass.payment_handlers(ledger, None)
    queue = f"dreamclass.{event_type}"

    with pytest.raises(PermanentError) as caught:
        await handlers[queue](delivery(queue, webhook(event_type), SEED_ID))

    assert str(caught.value) == NOT_CONFIGURED
    assert await ledger.get("dreamclass", PAYMENT_ID) is None


async def test_the_queue_not_the_unsigned_type_says_what_the_event_is(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, api: DreamClassApi
) -> None:
    dreamclass_fake.add_payment(16, 5, status=1)
    handlers = dreamclass.payment_handlers(ledger, api)
    body = webhook("PAYMENT_DELETED")

    await handlers["dreamclass.PAYMENT_CREATED"](
        delivery("dreamclass.PAYMENT_CREATED", body, SEED_ID)
    )

    recorded = await payment(ledger)
    assert recorded.status == "paid"
    assert recorded.events == (f"{SEED_ID}:PAYMENT_CREATED",)


async def test_a_forged_deletion_does_not_stand_in_for_the_genuine_creation(
    ledger: Ledger, dreamclass_fake: FakeDreamClass, handle: Callable[[bytes], Any]
) -> None:
    # The genuine creation's id, re-typed as a deletion, pointing at another invoice that does
    # not list the payment, with a timestamp far in the future.
    dreamclass_fake.add_invoice(99)
    dreamclass_fake.add_payment(16, 5, status=1, amount="300.00")
    forged = webhook("PAYMENT_DELETED", SEED_ID, 9_999_999_999_999, invoiceId=99)

    await handle(forged)
    await handle(fixture_bytes(SEED))

    recorded = await payment(ledger)
    assert recorded.status == "paid"
    assert recorded.amount == Decimal("300.00")
    assert recorded.version is None
    assert recorded.events == (f"{SEED_ID}:PAYMENT_DELETED", f"{SEED_ID}:PAYMENT_CREATED")


async def test_open_handlers_registers_every_queue_with_the_dreamclass_api(
    make_settings: Callable[..., Settings], dreamclass_fake: FakeDreamClass, tmp_path: Path
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    settings = dreamclass_fake.settings(make_settings(ledger_url=ledger_url))
    dreamclass_fake.add_payment(16, 5, status=1)
    queue = "dreamclass.PAYMENT_CREATED"

    async with open_handlers(settings) as registered:
        assert set(registered) == set(handled_queues())
        await registered[queue](delivery(queue, fixture_bytes(SEED), SEED_ID))

    async with await Ledger.open(ledger_url) as reopened:
        recorded = await reopened.get("dreamclass", PAYMENT_ID)
    assert recorded is not None
    assert recorded.status == "paid"


async def test_open_handlers_without_the_dreamclass_api_dead_letters_with_the_reason(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}").with_section(
        DreamClassSettings, api_url=None, api_key=None
    )
    queue = "dreamclass.PAYMENT_UPDATED"

    async with open_handlers(settings) as registered:
        assert set(registered) == set(handled_queues())
        with pytest.raises(PermanentError) as caught:
            await registered[queue](delivery(queue, webhook("PAYMENT_UPDATED"), SEED_ID))

    assert str(caught.value) == NOT_CONFIGURED
