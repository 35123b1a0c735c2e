"""Flexprice handlers on both ledgers: each fixture's row, transitions in any order, duplicates."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import orjson
import pytest

from hookpipe.providers import handled_queues
from hookpipe.workers.handlers import flexprice
from hookpipe.workers.ledger import Ledger
from tests.conftest import fixture_bytes
from tests.handler_support import context_for, delivery, stored_text
from tests.handler_support import ledger as ledger  # the fixture

PAYMENT_ID = "pay_01JPB3N5W2X9QF7R4T"

# Fixture name -> (svix message id, the ledger status it leads to)
FIXTURES = {
    "created": ("msg_created", "pending"),
    "pending": ("msg_pending", "pending"),
    "failed": ("msg_failed", "failed"),
    "success": ("msg_success", "paid"),
    "updated": ("msg_updated", "refunded"),
}


async def apply(ledger: Ledger, name: str, body: bytes | None = None) -> bool:
    """Apply one fixture (or `body` in its queue) the way the worker would."""
    event_id = FIXTURES[name][0]
    handler_body = fixture_bytes(f"flexprice.payment.{name}.json") if body is None else body
    event_type = orjson.loads(handler_body)["event_type"]
    return await flexprice.apply_payment_event(
        ledger, delivery(f"flexprice.{event_type}", handler_body, event_id)
    )


def with_payment(name: str, **changes: Any) -> bytes:
    body = orjson.loads(fixture_bytes(f"flexprice.payment.{name}.json"))
    body["payment"].update(changes)
    return orjson.dumps(body)


def test_every_flexprice_queue_has_a_handler(ledger: Ledger) -> None:
    handled = flexprice.handlers(context_for(ledger))

    assert sorted(handled) == sorted(q for q in handled_queues() if q.startswith("flexprice."))


@pytest.mark.parametrize("name", sorted(FIXTURES))
async def test_each_fixture_ends_in_its_ledger_row(ledger: Ledger, name: str) -> None:
    event_id, status = FIXTURES[name]

    assert await apply(ledger, name) is True

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == status
    assert payment.amount == Decimal("149.99")
    assert payment.currency == "USD"
    assert payment.events == (event_id,)
    assert payment.details["invoice_number"] == "INV-2025-00042"
    assert payment.details["payment_gateway"] == "stripe"
    assert payment.details["gateway_payment_id"] == "pi_3R2aKx2eZvKYlo2C1Q8x"
    assert payment.details["destination_id"] == "inv_01JPB3KX4R8T"


async def test_the_handler_from_the_registry_applies_the_event(ledger: Ledger) -> None:
    handle = flexprice.handlers(context_for(ledger))["flexprice.payment.success"]

    await handle(
        delivery(
            "flexprice.payment.success",
            fixture_bytes("flexprice.payment.success.json"),
            "msg_success",
        )
    )

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"


async def test_the_same_event_twice_changes_nothing(ledger: Ledger) -> None:
    assert await apply(ledger, "success") is True
    before = await ledger.get("flexprice", PAYMENT_ID)

    assert await apply(ledger, "success") is False

    assert await ledger.get("flexprice", PAYMENT_ID) == before


async def test_failed_then_success_ends_paid(ledger: Ledger) -> None:
    await apply(ledger, "failed")
    await apply(ledger, "success")

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"
    assert payment.details["provider_status"] == "SUCCEEDED"
    assert payment.events == ("msg_failed", "msg_success")


async def test_success_then_a_late_failed_still_ends_paid(ledger: Ledger) -> None:
    await apply(ledger, "success")
    await apply(ledger, "failed")  # older updated_at: it arrives late, it changes nothing

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"
    assert "error_message" not in payment.details
    assert payment.events == ("msg_success", "msg_failed")


@pytest.mark.parametrize(
    "order",
    [
        ("created", "pending", "failed", "success", "updated"),
        ("updated", "success", "failed", "pending", "created"),
        ("failed", "updated", "created", "success", "pending"),
    ],
)
async def test_every_order_ends_in_the_latest_state(ledger: Ledger, order: tuple[str, ...]) -> None:
    for name in order:
        await apply(ledger, name)

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "refunded"  # payment.updated has the latest updated_at
    assert payment.details["refunded_at"] == "2025-03-20T12:00:00+00:00"
    assert payment.events == tuple(FIXTURES[name][0] for name in order)


async def test_a_tie_on_updated_at_goes_to_the_later_lifecycle_step(ledger: Ledger) -> None:
    same_time = "2025-03-14T09:30:00Z"
    failed = with_payment("failed", updated_at=same_time)
    succeeded = with_payment("success", updated_at=same_time)
    for first, second in itertools.permutations([("failed", failed), ("success", succeeded)]):
        await apply(ledger, first[0], first[1])
        await apply(ledger, second[0], second[1])
        payment = await ledger.get("flexprice", PAYMENT_ID)
        assert payment is not None
        assert payment.status == "paid"


@pytest.mark.parametrize(
    ("provider_status", "status"),
    [
        ("PROCESSING", "pending"),
        ("OVERPAID", "paid"),
        ("PARTIALLY_REFUNDED", "paid"),
        ("VOIDED", "reversed"),
    ],
)
async def test_other_payment_statuses_map_to_the_ledger(
    ledger: Ledger, provider_status: str, status: str
) -> None:
    await apply(ledger, "updated", with_payment("updated", payment_status=provider_status))

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    assert payment.status == status
    assert payment.details["provider_status"] == provider_status


async def test_metadata_is_not_stored(ledger: Ledger) -> None:
    body = with_payment("success", metadata={"customer_email": "ana@example.com", "name": "Ana"})

    await apply(ledger, "success", body)

    payment = await ledger.get("flexprice", PAYMENT_ID)
    assert payment is not None
    text = stored_text(payment)
    assert b"ana@example.com" not in text
    assert b"pro-monthly" not in text
