"""Flexprice schemas: the fixtures, the full event-type list, tolerance, error paths."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from hookpipe.schemas import flexprice
from tests.conftest import fixture_bytes

PAYMENT_ID = "pay_01JPB3N5W2X9QF7R4T"

# Every fixture, with what it shows: (event type, payment_status, updated_at).
FIXTURES = {
    "flexprice.payment.created.json": ("payment.created", "INITIATED", "2025-03-14T09:26:53Z"),
    "flexprice.payment.pending.json": ("payment.pending", "PENDING", "2025-03-14T09:27:10Z"),
    "flexprice.payment.failed.json": ("payment.failed", "FAILED", "2025-03-14T09:28:02Z"),
    "flexprice.payment.success.json": ("payment.success", "SUCCEEDED", "2025-03-14T09:31:40Z"),
    "flexprice.payment.updated.json": ("payment.updated", "REFUNDED", "2025-03-20T12:00:00Z"),
}

# The event types of Flexprice's webhook documentation, in its order.
DOCUMENTED_EVENT_TYPES = [
    "subscription.created",
    "subscription.draft.created",
    "subscription.activated",
    "subscription.updated",
    "subscription.paused",
    "subscription.cancelled",
    "subscription.resumed",
    "subscription.phase.created",
    "subscription.phase.updated",
    "subscription.phase.deleted",
    "feature.created",
    "feature.updated",
    "feature.deleted",
    "feature.wallet_balance.alert",
    "entitlement.created",
    "entitlement.updated",
    "entitlement.deleted",
    "wallet.created",
    "wallet.updated",
    "wallet.terminated",
    "wallet.transaction.created",
    "payment.created",
    "payment.updated",
    "payment.failed",
    "payment.success",
    "payment.pending",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "invoice.update.finalized",
    "invoice.update.payment",
    "invoice.update.voided",
    "invoice.update",
    "invoice.payment.overdue",
    "wallet.credit_balance.dropped",
    "wallet.credit_balance.recovered",
    "wallet.ongoing_balance.dropped",
    "wallet.ongoing_balance.recovered",
    "subscription.renewal.due",
    "invoice.communication.triggered",
    "credit_note.created",
    "credit_note.updated",
]


def created() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(fixture_bytes("flexprice.payment.created.json"))
    return body


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_fixture_decodes_to_what_it_shows(name: str) -> None:
    event_type, status, updated_at = FIXTURES[name]

    event = flexprice.payment_event_decoder.decode(fixture_bytes(name))

    assert event.event_type == event_type
    assert flexprice.envelope_decoder.decode(fixture_bytes(name)).event_type == event_type
    payment = event.payment
    assert payment.id == PAYMENT_ID
    assert payment.payment_status == status
    assert payment.updated_at == datetime.fromisoformat(updated_at)
    assert payment.amount == Decimal("149.99")
    assert payment.currency == "usd"


def test_the_created_fixture_decodes_every_field_it_shows() -> None:
    payment = flexprice.payment_event_decoder.decode(
        fixture_bytes("flexprice.payment.created.json")
    ).payment

    assert isinstance(payment.amount, Decimal)
    assert payment.created_at == datetime(2025, 3, 14, 9, 26, 50, tzinfo=UTC)
    assert payment.destination_id == "inv_01JPB3KX4R8T"
    assert payment.destination_type == "INVOICE"
    assert payment.invoice_number == "INV-2025-00042"
    assert payment.payment_method_type == "CARD"
    assert payment.payment_method_id == "pm_1R2aKw2eZvKYlo2C"
    assert payment.payment_gateway == "stripe"
    assert payment.gateway_payment_id == "pi_3R2aKx2eZvKYlo2C1Q8x"
    assert payment.gateway_tracking_id == "trk_8842"
    assert payment.error_message is None
    assert payment.failed_at is None
    assert payment.succeeded_at is None
    assert payment.refunded_at is None
    assert payment.tenant_id == "tenant_01HZX8K2"
    assert payment.metadata == {"plan": "pro-monthly"}
    [attempt] = payment.attempts
    assert attempt.id == "attempt_01JPB3N7ZK4V"
    assert attempt.attempt_number == 1
    assert attempt.payment_id == PAYMENT_ID
    assert attempt.created_at == datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def test_the_failed_and_updated_fixtures_carry_their_times() -> None:
    failed = flexprice.payment_event_decoder.decode(
        fixture_bytes("flexprice.payment.failed.json")
    ).payment
    refunded = flexprice.payment_event_decoder.decode(
        fixture_bytes("flexprice.payment.updated.json")
    ).payment

    assert failed.error_message == "card_declined"
    assert failed.failed_at == datetime(2025, 3, 14, 9, 28, 2, tzinfo=UTC)
    assert refunded.refunded_at == datetime(2025, 3, 20, 12, 0, tzinfo=UTC)
    assert refunded.succeeded_at == datetime(2025, 3, 14, 9, 31, 40, tzinfo=UTC)


def test_the_event_type_list_is_flexprices_full_list() -> None:
    assert list(flexprice.EVENT_TYPES) == DOCUMENTED_EVENT_TYPES
    assert len(flexprice.EVENT_TYPES) == 42
    assert flexprice.PAYMENT_EVENT_TYPES == (
        "payment.created",
        "payment.updated",
        "payment.failed",
        "payment.success",
        "payment.pending",
    )


def test_every_payment_status_decodes() -> None:
    assert set(flexprice.PAYMENT_STATUSES) >= {
        "INITIATED",
        "PENDING",
        "PROCESSING",
        "SUCCEEDED",
        "FAILED",
        "REFUNDED",
        "PARTIALLY_REFUNDED",
    }
    for status in flexprice.PAYMENT_STATUSES:
        body = created()
        body["payment"]["payment_status"] = status
        event = flexprice.payment_event_decoder.decode(orjson.dumps(body))
        assert event.payment.payment_status == status


def test_an_unknown_event_type_still_decodes_as_an_envelope() -> None:
    body = created()
    body["event_type"] = "payout.created"

    assert flexprice.envelope_decoder.decode(orjson.dumps(body)).event_type == "payout.created"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.event_type"):
        flexprice.payment_event_decoder.decode(orjson.dumps(body))


def test_an_unknown_payment_status_names_its_path() -> None:
    body = created()
    body["payment"]["payment_status"] = "PAID"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.payment\.payment_status"):
        flexprice.payment_event_decoder.decode(orjson.dumps(body))


def test_an_amount_that_is_no_decimal_names_its_path() -> None:
    body = created()
    body["payment"]["amount"] = "149,99"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.payment\.amount"):
        flexprice.payment_event_decoder.decode(orjson.dumps(body))


def test_a_time_without_a_timezone_names_its_path() -> None:
    body = created()
    body["payment"]["updated_at"] = "2025-03-14T09:26:53"

    with pytest.raises(msgspec.ValidationError, match=r"timezone.*\$\.payment\.updated_at"):
        flexprice.payment_event_decoder.decode(orjson.dumps(body))


def test_unknown_fields_are_tolerated() -> None:
    body = created()
    body["webhook_version"] = 3
    body["payment"]["customer_id"] = "cust_01"

    event = flexprice.payment_event_decoder.decode(orjson.dumps(body))

    assert event.payment.id == PAYMENT_ID


def test_a_payment_without_an_id_names_its_path() -> None:
    body = created()
    del body["payment"]["id"]

    with pytest.raises(msgspec.ValidationError, match=r"`id` - at `\$\.payment`"):
        flexprice.payment_event_decoder.decode(orjson.dumps(body))
