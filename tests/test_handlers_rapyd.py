"""Rapyd handler on both ledgers: the seed's row, status mapping, ordering, duplicates, no PII."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from hookpipe.providers import handled_queues
from hookpipe.workers.errors import PermanentError
from hookpipe.workers.handlers import rapyd
from hookpipe.workers.ledger import Ledger
from tests.conftest import fixture_bytes
from tests.handler_support import context_for, delivery, stored_text
from tests.handler_support import ledger as ledger  # the fixture

SEED = "rapyd.INVOICE_PAYMENT_CREATED.json"
WEBHOOK_ID = "wh_83311530262abb943ac9ae3b6e34a441"
PAYMENT_ID = "payment_93bdf7d314a246a3b41024890c15c33d"


def seed_with(webhook_id: str = WEBHOOK_ID, created_at: int | None = None, **payment: Any) -> bytes:
    body = orjson.loads(fixture_bytes(SEED))
    body["id"] = webhook_id
    if created_at is not None:
        body["created_at"] = created_at
    body["data"]["payment"].update(payment)
    return orjson.dumps(body)


async def apply(ledger: Ledger, body: bytes, event_id: str = WEBHOOK_ID) -> bool:
    return await rapyd.apply_invoice_payment(ledger, delivery(rapyd.QUEUE, body, event_id))


async def test_the_seed_ends_in_a_paid_row(ledger: Ledger) -> None:
    assert await apply(ledger, fixture_bytes(SEED)) is True

    payment = await ledger.get("rapyd", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"
    assert payment.amount == Decimal("800")
    assert payment.currency == "MXN"
    assert payment.events == (WEBHOOK_ID,)
    assert payment.details["invoice_id"] == "invoice_fdbe5157cff4e25480611da238922e46"
    assert payment.details["customer"] == "cus_c2499761d00f5f7130d57a67baaf2af2"
    assert payment.details["subscription"] == "sub_efae7e085ecff92d0c9a7f41ecd0a169"
    assert payment.details["provider_status"] == "CLO"
    assert payment.details["paid_at"] == "2023-12-14T06:56:34+00:00"
    assert payment.details["payment_method_type"] == "mx_visacredit_card"


async def test_the_registry_handler_applies_the_seed(ledger: Ledger) -> None:
    handled = rapyd.handlers(context_for(ledger))
    assert sorted(handled) == [q for q in handled_queues() if q.startswith("rapyd.")]
    handle = handled["rapyd.INVOICE_PAYMENT_CREATED"]

    await handle(delivery(rapyd.QUEUE, fixture_bytes(SEED), WEBHOOK_ID))

    assert await ledger.get("rapyd", PAYMENT_ID) is not None


async def test_no_card_data_or_names_are_stored(ledger: Ledger) -> None:
    await apply(ledger, fixture_bytes(SEED))

    payment = await ledger.get("rapyd", PAYMENT_ID)
    assert payment is not None
    text = stored_text(payment)
    card_data = (
        b"John Doe",
        b"0060",
        b"518834",
        b"MASTERCARD",
        b"MAYBANK",
        b"ocfp_11ECFC393995502381220EC01B2F2B1B",
        b"card_89f7ff14b57651628d7ef470562bb75c",
    )
    for personal in card_data:
        assert personal not in text


async def test_the_same_webhook_twice_changes_nothing(ledger: Ledger) -> None:
    await apply(ledger, fixture_bytes(SEED))
    before = await ledger.get("rapyd", PAYMENT_ID)

    assert await apply(ledger, fixture_bytes(SEED)) is False

    assert await ledger.get("rapyd", PAYMENT_ID) == before


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"status": "ACT", "paid": False, "paid_at": 0}, "pending"),
        ({"status": "NEW", "paid": False, "paid_at": 0}, "pending"),
        ({"status": "ERR", "paid": False, "paid_at": 0}, "failed"),
        ({"status": "CAN", "paid": False, "paid_at": 0}, "failed"),
        ({"status": "EXP", "paid": False, "paid_at": 0}, "failed"),
        ({"status": "REV"}, "reversed"),
        ({"refunded": True, "refunded_amount": 800}, "refunded"),
    ],
)
async def test_payment_statuses_map_to_the_ledger(
    ledger: Ledger, changes: dict[str, Any], status: str
) -> None:
    await apply(ledger, seed_with(**changes))

    payment = await ledger.get("rapyd", PAYMENT_ID)
    assert payment is not None
    assert payment.status == status


async def test_an_unknown_payment_status_is_a_permanent_error_that_does_not_quote_it(
    ledger: Ledger,
) -> None:
    with pytest.raises(PermanentError, match=r"data\.payment\.status is not one of ACT") as caught:
        await apply(ledger, seed_with(status="Jane Roe"))

    assert "Jane" not in str(caught.value)

    assert await ledger.get("rapyd", PAYMENT_ID) is None


async def test_an_older_webhook_after_a_newer_one_changes_nothing(ledger: Ledger) -> None:
    await apply(ledger, seed_with("wh_later", created_at=1702537100), "wh_later")
    await apply(
        ledger,
        seed_with("wh_earlier", created_at=1702537000, status="ACT", paid=False),
        "wh_earlier",
    )

    payment = await ledger.get("rapyd", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"
    assert payment.events == ("wh_later", "wh_earlier")


async def test_a_newer_webhook_updates_the_payment(ledger: Ledger) -> None:
    await apply(
        ledger,
        seed_with("wh_earlier", created_at=1702537000, status="ACT", paid=False),
        "wh_earlier",
    )
    await apply(ledger, seed_with("wh_later", created_at=1702537100), "wh_later")

    payment = await ledger.get("rapyd", PAYMENT_ID)
    assert payment is not None
    assert payment.status == "paid"
