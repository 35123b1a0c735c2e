"""Jodo handlers on both ledgers: the seeds' rows, duplicates, either order of debit and cancel."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers.errors import PermanentError
from hookpipe.workers.handlers import jodo, open_handlers
from hookpipe.workers.ledger import Ledger, Payment
from tests.conftest import fixture_bytes
from tests.handler_support import context_for, delivery, stored_text
from tests.handler_support import ledger as ledger  # the fixture

DEBITED_QUEUE = "jodo.order.payment.debited"
CANCELLED_QUEUE = "jodo.direct.payment.cancelled"
DEBITED = fixture_bytes("jodo.order.payment.debited.json")
CANCELLED = fixture_bytes("jodo.direct.payment.cancelled.json")
DEBITED_ID = "45bb1387-2a83-4fdb-a149-e7dec81043f0"
CANCELLED_ID = "9c7ae52e-dad6-4dff-948e-cdfc2926cf7b"
# The record the cancel seed leaves: the reversal's own, and no contact data.
SEED_REVERSAL = {
    "event_id": CANCELLED_ID,
    "timestamp": 1692012157,
    "amount": "5000.0",
    "mode": "cash",
    "transaction_id": "tra_1234_Rarome1",
    "settlement_utr": "settl_1234_Rarome1",
    "paid_at": "2022-01-29T10:05:45Z",
    "fee_components": [
        {"fee_component": "ADMISSION_FEE", "amount": "3000.00"},
        {"fee_component": "TUITION_FEE", "amount": "2000.00"},
    ],
    "student": {"identifier": "JODO/TEST/005", "custom_identifier": None, "jodo_student_id": 7268},
}
PERSONAL_DATA = (b"Ron Rivest", b"9876543210", b"customer@example.com", b"advance payment")


def event_id_of(body: bytes) -> str:
    event_id: str = orjson.loads(body)["event_id"]
    return event_id


async def debit(ledger: Ledger, body: bytes = DEBITED) -> bool:
    return await jodo.apply_order_payment_debited(
        ledger, delivery(DEBITED_QUEUE, body, event_id_of(body))
    )


async def cancel(ledger: Ledger, body: bytes = CANCELLED) -> bool:
    return await jodo.apply_direct_payment_cancelled(
        ledger, delivery(CANCELLED_QUEUE, body, event_id_of(body))
    )


def debit_of(payment_id: str, event_id: str, timestamp: int, *amounts: float) -> bytes:
    """The debit seed for another order, with fee components of these amounts."""
    body = orjson.loads(DEBITED)
    body["event_id"] = event_id
    body["timestamp"] = timestamp
    body["payload"]["order_id"] = payment_id
    body["payload"]["order"]["details"] = [
        {"component_type": f"FEE_{n}", "amount": amount} for n, amount in enumerate(amounts)
    ]
    return orjson.dumps(body)


def cancel_of(payment_id: str, event_id: str, timestamp: int) -> bytes:
    body = orjson.loads(CANCELLED)
    body["event_id"] = event_id
    body["timestamp"] = timestamp
    body["payload"]["payment"]["id"] = payment_id
    return orjson.dumps(body)


def state(payment: Payment | None) -> dict[str, Any]:
    """What must not depend on the order of arrival: all but the times and the events' order."""
    assert payment is not None
    return {
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "details": payment.details,
        "version": payment.version,
        "events": sorted(payment.events),
    }


async def test_the_debit_seed_marks_the_order_paid(ledger: Ledger) -> None:
    assert await debit(ledger) is True

    payment = await ledger.get("jodo", "order_12343532424")
    assert payment is not None
    assert (payment.status, payment.currency) == ("paid", "INR")
    assert str(payment.amount) == "10000.0"
    assert payment.events == (DEBITED_ID,)
    assert payment.version == 1691143279 * 1000
    assert payment.details == {
        "order": {
            "event_id": DEBITED_ID,
            "timestamp": 1691143279,
            "order_identifier": "STUDENT_IDENTIFIER",
            "order_status": "paid",
            "paid_at": "2023-04-05T07:07:20Z",
            "amount": "10000.0",
            "fee_components": [{"component_type": "Admission Fee", "amount": "10000.0"}],
            "notes": [{"key": "erp_reference_id", "value": "REF123"}],
        }
    }


async def test_the_amount_is_the_exact_sum_of_the_fee_components(ledger: Ledger) -> None:
    await debit(ledger, debit_of("order_sum", "evt-sum", 1691143279, 0.1, 0.2, 1000.05))

    payment = await ledger.get("jodo", "order_sum")
    assert payment is not None
    assert payment.amount == Decimal("1000.35")
    assert str(payment.amount) == "1000.35"


async def test_the_cancel_seed_reverses_the_payment(ledger: Ledger) -> None:
    assert await cancel(ledger) is True

    payment = await ledger.get("jodo", "direct_3257")
    assert payment is not None
    assert (payment.status, payment.currency) == ("reversed", "INR")
    assert str(payment.amount) == "5000.0"
    assert payment.events == (CANCELLED_ID,)
    assert payment.details == {"reversal": SEED_REVERSAL}


async def test_duplicates_change_nothing(ledger: Ledger) -> None:
    assert await debit(ledger) is True
    assert await cancel(ledger) is True
    paid = await ledger.get("jodo", "order_12343532424")
    reversed_ = await ledger.get("jodo", "direct_3257")

    assert await debit(ledger) is False
    assert await cancel(ledger) is False

    assert await ledger.get("jodo", "order_12343532424") == paid
    assert await ledger.get("jodo", "direct_3257") == reversed_


@pytest.mark.parametrize("first", ["debit", "cancel"])
async def test_debit_and_cancel_end_the_same_in_either_order(ledger: Ledger, first: str) -> None:
    # The debit's amount differs from the cancellation's: the debit's must win in both orders.
    debit_body = debit_of("direct_3257", "evt-debit", 1692000000, 3000.0, 1999.5)
    steps = [debit(ledger, debit_body), cancel(ledger)]
    if first == "cancel":
        steps.reverse()
    for step in steps:
        assert await step is True

    payment = await ledger.get("jodo", "direct_3257")
    assert state(payment) == {
        "status": "reversed",
        "amount": Decimal("4999.5"),
        "currency": "INR",
        "details": {
            "order": {
                "event_id": "evt-debit",
                "timestamp": 1692000000,
                "order_identifier": "STUDENT_IDENTIFIER",
                "order_status": "paid",
                "paid_at": "2023-04-05T07:07:20Z",
                "amount": "4999.5",
                "fee_components": [
                    {"component_type": "FEE_0", "amount": "3000.0"},
                    {"component_type": "FEE_1", "amount": "1999.5"},
                ],
                "notes": [{"key": "erp_reference_id", "value": "REF123"}],
            },
            "reversal": SEED_REVERSAL,
        },
        "version": 1692012157 * 1000,
        "events": sorted(["evt-debit", CANCELLED_ID]),
    }


async def test_a_late_debit_fills_in_the_amount_but_the_status_stays_reversed(
    ledger: Ledger,
) -> None:
    await cancel(ledger, cancel_of("pay_late", "evt-cancel", 1692012157))
    before = await ledger.get("jodo", "pay_late")
    assert before is not None
    assert (before.status, before.amount) == ("reversed", Decimal("5000.0"))
    assert "order" not in before.details

    await debit(ledger, debit_of("pay_late", "evt-debit", 1692000000, 4999.5))

    after = await ledger.get("jodo", "pay_late")
    assert after is not None
    assert (after.status, after.amount) == ("reversed", Decimal("4999.5"))
    assert after.details["order"]["event_id"] == "evt-debit"
    assert after.details["reversal"]["event_id"] == "evt-cancel"
    assert after.events == ("evt-cancel", "evt-debit")


async def test_an_older_debit_of_the_same_order_does_not_replace_a_newer_one(
    ledger: Ledger,
) -> None:
    await debit(ledger, debit_of("order_twice", "evt-new", 1692000000, 200.0))
    await debit(ledger, debit_of("order_twice", "evt-old", 1691000000, 100.0))

    payment = await ledger.get("jodo", "order_twice")
    assert payment is not None
    assert payment.amount == Decimal("200.0")
    assert payment.details["order"]["event_id"] == "evt-new"
    assert payment.events == ("evt-new", "evt-old")  # the older one is recorded all the same


async def test_no_personal_data_is_stored(ledger: Ledger) -> None:
    await debit(ledger)
    await cancel(ledger)
    await debit(ledger, debit_of("direct_3257", "evt-debit", 1692000000, 5000.0))

    for payment in await ledger.list(provider="jodo"):
        stored = stored_text(payment)
        for value in PERSONAL_DATA:
            assert value not in stored


async def test_a_body_of_another_type_is_permanent(ledger: Ledger) -> None:
    with pytest.raises(PermanentError, match=r"order\.payment\.debited event, got another"):
        await jodo.apply_order_payment_debited(
            ledger, delivery(DEBITED_QUEUE, CANCELLED, CANCELLED_ID)
        )

    assert await ledger.processed("jodo", CANCELLED_ID) is False


async def test_a_bad_body_raises_the_decode_error_and_records_nothing(ledger: Ledger) -> None:
    body = orjson.loads(DEBITED)
    del body["payload"]["order"]["details"]

    with pytest.raises(msgspec.ValidationError, match=r"\$\.payload\.order"):
        await debit(ledger, orjson.dumps(body))
    with pytest.raises(msgspec.DecodeError):
        await jodo.apply_order_payment_debited(
            ledger, delivery(DEBITED_QUEUE, b"{not json", DEBITED_ID)
        )

    assert await ledger.processed("jodo", DEBITED_ID) is False
    assert await ledger.list() == []


async def test_the_handlers_cover_the_jodo_queues(ledger: Ledger) -> None:
    registered = jodo.handlers(context_for(ledger))

    assert set(registered) == {q for q in handled_queues() if q.startswith("jodo.")}
    await registered[DEBITED_QUEUE](delivery(DEBITED_QUEUE, DEBITED, DEBITED_ID))
    await registered[CANCELLED_QUEUE](delivery(CANCELLED_QUEUE, CANCELLED, CANCELLED_ID))
    assert {p.status for p in await ledger.list()} == {"paid", "reversed"}


async def test_open_handlers_opens_the_ledger_and_registers_jodo(
    make_settings: Any, ledger_url: str
) -> None:
    settings: Settings = make_settings(ledger_url=ledger_url)

    async with open_handlers(settings) as registered:
        assert {DEBITED_QUEUE, CANCELLED_QUEUE} <= set(registered)
        assert set(registered) <= set(handled_queues())
        await registered[DEBITED_QUEUE](delivery(DEBITED_QUEUE, DEBITED, DEBITED_ID))

    async with await Ledger.open(ledger_url) as reopened:
        payment = await reopened.get("jodo", "order_12343532424")
    assert payment is not None and payment.status == "paid"
