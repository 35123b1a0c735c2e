"""Jodo's seed examples decode to what the docs show: exact money, aware times, no PII fields."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest

from hookpipe.schemas import jodo
from hookpipe.schemas.common import from_unix_seconds
from tests.conftest import fixture_bytes

DEBITED = "jodo.order.payment.debited.json"
CANCELLED = "jodo.direct.payment.cancelled.json"


def edited(name: str, edit: Any) -> bytes:
    body = orjson.loads(fixture_bytes(name))
    edit(body)
    return orjson.dumps(body)


def test_order_payment_debited_seed() -> None:
    event = jodo.decode(fixture_bytes(DEBITED))

    assert isinstance(event, jodo.OrderPaymentDebited)
    assert event.event_id == "45bb1387-2a83-4fdb-a149-e7dec81043f0"
    assert event.event == "order.payment.debited"
    assert event.version == "1.0"
    assert event.timestamp == 1691143279
    assert from_unix_seconds(event.timestamp) == datetime(2023, 8, 4, 10, 1, 19, tzinfo=UTC)
    assert event.payload.order_id == "order_12343532424"
    order = event.payload.order
    assert order.identifier == "STUDENT_IDENTIFIER"
    assert order.status == "paid"
    assert order.paid_at == datetime(2023, 4, 5, 7, 7, 20, tzinfo=UTC)
    assert order.paid_at.tzinfo is not None
    assert order.details == (
        jodo.OrderFeeComponent(component_type="Admission Fee", amount=Decimal("10000.0")),
    )
    assert str(order.details[0].amount) == "10000.0"  # from the JSON number, never via float
    assert order.notes == (jodo.Note(key="erp_reference_id", value="REF123"),)


def test_direct_payment_cancelled_seed() -> None:
    event = jodo.decode(fixture_bytes(CANCELLED))

    assert isinstance(event, jodo.DirectPaymentCancelled)
    assert event.event_id == "9c7ae52e-dad6-4dff-948e-cdfc2926cf7b"
    assert event.timestamp == 1692012157
    payment = event.payload.payment
    assert payment.id == "direct_3257"
    assert payment.amount == Decimal("5000.0")
    assert (payment.mode, payment.transaction_id) == ("cash", "tra_1234_Rarome1")
    assert payment.settlement_utr == "settl_1234_Rarome1"
    assert payment.paid_at == datetime(2022, 1, 29, 10, 5, 45, tzinfo=UTC)
    assert [(d.fee_component, str(d.amount)) for d in payment.details] == [
        ("ADMISSION_FEE", "3000.00"),
        ("TUITION_FEE", "2000.00"),
    ]
    student = event.payload.student
    assert student is not None
    assert student.identifier == "JODO/TEST/005"
    assert student.custom_identifier is None  # null in the seed
    assert (student.academic_year_start, student.academic_year_end) == (2022, 2023)
    assert student.grade == jodo.Grade(name="Class I", code="fdb97be4")
    assert event.payload.jodo_student_id == 7268


def test_personal_data_is_not_decoded() -> None:
    debited = jodo.decode(fixture_bytes(DEBITED))
    cancelled = jodo.decode(fixture_bytes(CANCELLED))

    decoded = msgspec.json.encode([debited, cancelled])
    for value in (b"Ron Rivest", b"9876543210", b"customer@example.com"):
        assert value not in decoded


def test_money_as_number_or_string_decodes_exactly() -> None:
    # Written as text: a JSON library in between would turn the numbers into floats first.
    details = (
        b'[{"component_type": "A", "amount": 0.1}, {"component_type": "B", "amount": "0.20"},'
        b' {"component_type": "C", "amount": 12345678901234567890.12}]'
    )
    seed = fixture_bytes(DEBITED)
    old = b'[{ "component_type": "Admission Fee", "amount": 10000.0 }]'
    assert old in seed

    event = jodo.decode(seed.replace(old, details))

    assert isinstance(event, jodo.OrderPaymentDebited)
    assert [str(d.amount) for d in event.payload.order.details] == [
        "0.1",
        "0.20",
        "12345678901234567890.12",
    ]


def test_unknown_fields_are_tolerated() -> None:
    def add_fields(body: dict[str, Any]) -> None:
        body["new_top_level"] = {"x": 1}
        body["payload"]["order"]["currency"] = "INR"
        body["payload"]["order"]["details"][0]["discount"] = "0.00"

    event = jodo.decode(edited(DEBITED, add_fields))

    assert isinstance(event, jodo.OrderPaymentDebited)
    assert event.payload.order.details[0].amount == Decimal("10000.0")


def test_an_unknown_event_type_decodes_as_its_envelope() -> None:
    body = b'{"event_id": "e-1", "event": "order.refund.processed", "timestamp": 1700000000}'

    event = jodo.decode(body)

    assert type(event) is jodo.Envelope
    assert (event.event_id, event.event) == ("e-1", "order.refund.processed")


@pytest.mark.parametrize(
    ("name", "path", "message"),
    [
        (DEBITED, ("payload", "order_id"), "`order_id` - at `$.payload`"),
        (DEBITED, ("payload", "order", "paid_at"), "`paid_at` - at `$.payload.order`"),
        (CANCELLED, ("payload", "payment", "id"), "`id` - at `$.payload.payment`"),
        (CANCELLED, ("event_id",), "`event_id`"),
    ],
)
def test_a_missing_required_field_names_its_path(
    name: str, path: tuple[str, ...], message: str
) -> None:
    def remove(body: dict[str, Any]) -> None:
        for key in path[:-1]:
            body = body[key]
        del body[path[-1]]

    with pytest.raises(msgspec.ValidationError, match="missing required field") as caught:
        jodo.decode(edited(name, remove))

    assert message in str(caught.value)


def test_a_time_without_zone_is_rejected() -> None:
    def naive(body: dict[str, Any]) -> None:
        body["payload"]["order"]["paid_at"] = "2023-04-05T07:07:20"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.payload\.order\.paid_at"):
        jodo.decode(edited(DEBITED, naive))


def test_a_wrong_type_names_its_path() -> None:
    def bad_amount(body: dict[str, Any]) -> None:
        body["payload"]["payment"]["amount"] = "five thousand"

    with pytest.raises(msgspec.ValidationError, match=r"\$\.payload\.payment\.amount"):
        jodo.decode(edited(CANCELLED, bad_amount))


def test_a_body_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        jodo.decode(b"not json")


@pytest.mark.parametrize("timestamp", [10**18, -1, 253_402_300_800])
def test_a_timestamp_out_of_range_is_refused_when_decoding_with_its_field_named(
    timestamp: int,
) -> None:
    document = orjson.loads(fixture_bytes("jodo.order.payment.debited.json"))
    document["timestamp"] = timestamp

    with pytest.raises(msgspec.ValidationError, match=r"\$\.timestamp"):
        jodo.decode(orjson.dumps(document))
