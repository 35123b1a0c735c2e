"""Rapyd schemas: the seed webhook, tolerance, card data left out, error paths."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from hookpipe.schemas import rapyd
from tests.conftest import fixture_bytes

SEED = "rapyd.INVOICE_PAYMENT_CREATED.json"


def seed() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(fixture_bytes(SEED))
    return body


def test_the_seed_envelope_decodes_to_what_it_shows() -> None:
    envelope = rapyd.envelope_decoder.decode(fixture_bytes(SEED))

    assert envelope.id == "wh_83311530262abb943ac9ae3b6e34a441"
    assert envelope.type == rapyd.INVOICE_PAYMENT_CREATED
    assert envelope.status == "NEW"
    assert envelope.created_at == 1702537025
    assert envelope.trigger_operation_id == "ba8a00d8-8a08-4763-b6b6-fb85e953e99c"
    event = rapyd.invoice_payment_created_decoder.decode(fixture_bytes(SEED))
    assert event.created == datetime(2023, 12, 14, 6, 57, 5, tzinfo=UTC)


def test_the_seed_invoice_decodes_to_what_it_shows() -> None:
    invoice = rapyd.invoice_payment_created_decoder.decode(fixture_bytes(SEED)).data

    assert invoice.id == "invoice_fdbe5157cff4e25480611da238922e46"
    assert invoice.status == "paid"
    assert invoice.currency == "MXN"
    assert invoice.total == Decimal("800")
    assert invoice.customer == "cus_c2499761d00f5f7130d57a67baaf2af2"
    assert invoice.subscription == "sub_efae7e085ecff92d0c9a7f41ecd0a169"
    assert invoice.billing_reason == "subscription_create"
    assert invoice.attempt_count == 1


def test_the_seed_payment_decodes_to_what_it_shows() -> None:
    payment = rapyd.invoice_payment_created_decoder.decode(fixture_bytes(SEED)).data.payment

    assert payment.id == "payment_93bdf7d314a246a3b41024890c15c33d"
    assert payment.amount == Decimal("800")
    assert isinstance(payment.amount, Decimal)
    assert payment.currency_code == "MXN"
    assert payment.status == "CLO"
    assert payment.status in rapyd.PAYMENT_STATUSES
    assert payment.paid is True
    assert payment.paid_at == 1702536994
    assert payment.paid_time == datetime(2023, 12, 14, 6, 56, 34, tzinfo=UTC)
    assert payment.refunded is False
    assert payment.refunded_amount == Decimal("0")
    assert payment.customer_token == "cus_c2499761d00f5f7130d57a67baaf2af2"
    assert payment.invoice == "invoice_fdbe5157cff4e25480611da238922e46"
    assert payment.payment_method == "card_89f7ff14b57651628d7ef470562bb75c"
    assert payment.payment_method_type == "mx_visacredit_card"
    assert payment.payment_method_type_category == "card"
    assert payment.failure_code == ""


def test_card_data_is_not_decoded() -> None:
    payment = rapyd.invoice_payment_created_decoder.decode(fixture_bytes(SEED)).data.payment

    encoded = msgspec.json.encode(payment)
    for secret in (b"John Doe", b"0060", b"518834", b"payment_method_data", b"fingerprint"):
        assert secret not in encoded


def test_a_fractional_amount_stays_exact() -> None:
    body = seed()
    body["data"]["payment"]["amount"] = 19.99

    payment = rapyd.invoice_payment_created_decoder.decode(orjson.dumps(body)).data.payment

    assert payment.amount == Decimal("19.99")


def test_unpaid_times_decode_as_none() -> None:
    body = seed()
    body["data"]["payment"]["paid_at"] = 0

    payment = rapyd.invoice_payment_created_decoder.decode(orjson.dumps(body)).data.payment

    assert payment.paid_time is None
    assert rapyd.from_unix(None) is None


def test_unknown_fields_are_tolerated() -> None:
    body = seed()
    body["api_version"] = "2025-01"
    body["data"]["payment"]["new_rapyd_field"] = {"nested": [1, 2]}

    event = rapyd.invoice_payment_created_decoder.decode(orjson.dumps(body))

    assert event.data.payment.id == "payment_93bdf7d314a246a3b41024890c15c33d"


def test_a_missing_payment_id_names_its_path() -> None:
    body = seed()
    del body["data"]["payment"]["id"]

    with pytest.raises(msgspec.ValidationError, match=r"`id` - at `\$\.data\.payment`"):
        rapyd.invoice_payment_created_decoder.decode(orjson.dumps(body))


def test_a_wrong_type_names_its_path() -> None:
    body = seed()
    body["data"]["payment"]["paid_at"] = "yesterday"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.data\.payment\.paid_at"):
        rapyd.invoice_payment_created_decoder.decode(orjson.dumps(body))


def test_an_envelope_without_an_id_is_refused() -> None:
    body = seed()
    del body["id"]

    with pytest.raises(msgspec.ValidationError, match="`id`"):
        rapyd.envelope_decoder.decode(orjson.dumps(body))
