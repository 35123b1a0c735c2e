"""DreamClass schemas: the seed webhook, the API's answers, tolerance and error paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import orjson
import pytest

from hookpipe.schemas import dreamclass as dc
from tests.conftest import fixture_bytes

SEED = "dreamclass.PAYMENT_CREATED.json"


def seed_with(**changes: object) -> bytes:
    """The seed webhook with top-level fields changed; a None value removes the field."""
    body = orjson.loads(fixture_bytes(SEED))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return orjson.dumps(body)


def test_the_seed_envelope_decodes_to_what_it_shows() -> None:
    envelope = dc.envelope_decoder.decode(fixture_bytes(SEED))

    assert envelope.id == "214fb720-2248-44e0-9bfd-72171f9e72de"
    assert envelope.type == dc.PAYMENT_CREATED
    assert envelope.tenant == "my-school"
    assert envelope.signature == "b2fl8PdPRVsq0vre6DpdHJwHse8Ln+WlY0Vx32aKxtE="
    assert envelope.timestamp == 1727885313393
    event = dc.payment_event_decoder.decode(fixture_bytes(SEED))
    assert event.sent_at == datetime(2024, 10, 2, 16, 8, 33, 393000, tzinfo=UTC)


def test_the_seed_payment_decodes_to_what_it_shows() -> None:
    event = dc.payment_event_decoder.decode(fixture_bytes(SEED))

    data = event.data
    assert data.id == 5
    assert data.amount == Decimal("300")
    assert isinstance(data.amount, Decimal)
    assert data.created_at == datetime(2024, 10, 2, 16, 8, 33, 387000, tzinfo=UTC)
    assert data.created_at.utcoffset() == timedelta(0)
    assert data.invoice_id == 16
    assert data.public_notes == "Sample note"
    assert data.private_notes == "Sample note"
    assert data.payment_method == dc.PaymentMethodRef(id=1, log_only=True)
    assert data.status is None


def test_a_created_at_with_another_offset_keeps_its_offset() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    body["data"]["createdAt"] = "2024-10-02T19:08:33.387+03:00"

    event = dc.payment_event_decoder.decode(orjson.dumps(body))

    assert event.data.created_at == datetime(2024, 10, 2, 16, 8, 33, 387000, tzinfo=UTC)
    assert event.data.created_at.utcoffset() == timedelta(hours=3)


def test_a_decimal_amount_stays_exact() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    body["data"]["amount"] = 0.1  # orjson writes the shortest text, "0.1": no binary rounding
    event = dc.payment_event_decoder.decode(orjson.dumps(body))

    assert event.data.amount == Decimal("0.1")


def test_unknown_fields_are_tolerated() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    body["schemaVersion"] = 2
    body["data"]["receiptNumber"] = "R-1"
    body["data"]["paymentmethod"]["translation"] = {"en": "Cash"}
    body["data"]["paymentmethod"]["institutionId"] = 7

    event = dc.payment_event_decoder.decode(orjson.dumps(body))

    assert event.data.id == 5
    assert event.data.payment_method.id == 1


def test_a_deleted_payment_with_only_its_id_decodes() -> None:
    body = seed_with(type=dc.PAYMENT_DELETED, data={"id": 5})

    event = dc.payment_deleted_decoder.decode(body)

    assert event.type == dc.PAYMENT_DELETED
    assert event.data.id == 5
    assert event.data.invoice_id is None
    assert event.data.amount is None


def test_a_deleted_payment_with_the_full_data_decodes() -> None:
    event = dc.payment_deleted_decoder.decode(seed_with(type=dc.PAYMENT_DELETED))

    assert event.data.invoice_id == 16
    assert event.data.amount == Decimal("300")


def test_a_missing_required_field_names_its_path() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    del body["data"]["invoiceId"]

    with pytest.raises(msgspec.ValidationError, match=r"`invoiceId` - at `\$\.data`"):
        dc.payment_event_decoder.decode(orjson.dumps(body))


def test_a_created_at_without_a_timezone_is_refused() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    body["data"]["createdAt"] = "2024-10-02T16:08:33.387"

    with pytest.raises(msgspec.ValidationError, match=r"timezone.*\$\.data\.createdAt"):
        dc.payment_event_decoder.decode(orjson.dumps(body))


def test_a_wrong_type_names_its_path() -> None:
    body = orjson.loads(fixture_bytes(SEED))
    body["data"]["paymentmethod"]["id"] = "cash"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.data\.paymentmethod\.id"):
        dc.payment_event_decoder.decode(orjson.dumps(body))


def test_a_payment_event_without_a_tenant_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="`tenant`"):
        dc.payment_event_decoder.decode(seed_with(tenant=None))


def test_a_body_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        dc.payment_event_decoder.decode(b"id=214fb720&type=PAYMENT_CREATED")


def test_an_invoice_answer_decodes_with_its_payments() -> None:
    answer = {
        "id": 16,
        "currency": "EUR",
        "invoiceNumber": "INV-00016",
        "total": "900.00",
        "payments": [
            {
                "id": 5,
                "amount": "300.00",
                "status": 1,
                "createdAt": "2024-10-02T16:08:33+00:00",
                "paymentmethod": {"id": 2, "logOnlyPaymentMethod": True},
            },
            {"id": 6, "amount": 600, "status": 3, "paymentmethod": 4},
        ],
    }

    invoice = dc.invoice_decoder.decode(orjson.dumps(answer))

    assert invoice.currency == "EUR"
    assert invoice.invoice_number == "INV-00016"
    first, second = invoice.payments
    assert first.amount == Decimal("300.00")
    assert first.payment_method_id == 2
    assert second.amount == Decimal("600")
    assert second.payment_method_id == 4
    assert invoice.payment(6) is second
    assert invoice.payment(7) is None


def test_an_invoice_answer_with_few_fields_decodes() -> None:
    invoice = dc.invoice_decoder.decode(b'{"id": 16, "payments": [{"id": 5}]}')

    assert invoice.currency is None
    [payment] = invoice.payments
    assert payment.amount is None
    assert payment.status is None
    assert payment.payment_method_id is None


def test_payment_methods_decode_with_a_readable_label() -> None:
    answer = [
        {"id": 1, "name": "Cash", "logOnlyPaymentMethod": True},
        {"id": 3, "translation": "Online", "logOnlyPaymentMethod": False},
        {"id": 5, "translation": {"en": "Voucher"}},
    ]

    cash, online, voucher = dc.payment_methods_decoder.decode(orjson.dumps(answer))

    assert (cash.label, cash.log_only) == ("Cash", True)
    assert (online.label, online.log_only) == ("Online", False)
    assert voucher.label is None


@pytest.mark.parametrize(("field", "value"), [("timestamp", 10**16), ("id", 2**63)])
def test_numbers_past_what_the_ledger_holds_are_refused_when_decoding(
    field: str, value: int
) -> None:
    document = orjson.loads(fixture_bytes("dreamclass.PAYMENT_CREATED.json"))
    if field == "id":
        document["data"]["id"] = value
    else:
        document[field] = value

    with pytest.raises(msgspec.ValidationError, match=f"\\$\\.(data\\.)?{field}"):
        dc.payment_event_decoder.decode(json.dumps(document).encode())
