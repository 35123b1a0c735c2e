"""The one personal-data rule set, as logs, dead-letter reasons and `dlq show` apply it."""

from __future__ import annotations

import orjson
import pytest
import structlog

from hookpipe import personal
from hookpipe.logs import configure_logging


@pytest.mark.parametrize(
    "key", ["name", "customerEmail", "phone_number", "card", "last4", "publicNotes", "ip"]
)
def test_keys_that_name_personal_data(key: str) -> None:
    assert personal.is_personal_key(key)


@pytest.mark.parametrize("key", ["event_id", "queue", "amount", "listening_on", "status"])
def test_keys_that_do_not(key: str) -> None:
    assert not personal.is_personal_key(key)


def test_a_body_is_masked_at_any_depth_and_empty_values_stay() -> None:
    body = {
        "id": "evt-1",
        "customer": {"full_name": "Ron Rivest", "email": "", "tags": ["ron@example.com"]},
    }
    assert personal.mask(body) == {
        "id": "evt-1",
        "customer": {"full_name": personal.MASK, "email": "", "tags": [personal.MASK]},
    }


def test_a_log_line_redacts_personal_and_secret_keys(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        structlog.get_logger().warning(
            "probe", customer_email="ron@example.com", signature="abc", queue="jodo.x"
        )
    finally:
        structlog.reset_defaults()
    line = orjson.loads(capsys.readouterr().err.splitlines()[-1])
    assert line["customer_email"] == line["signature"] == "[redacted]"
    assert line["queue"] == "jodo.x"


def test_dlq_show_keeps_only_ids_types_statuses_amounts_currencies_and_times() -> None:
    body = {
        "id": "wh_1",
        "type": "PAYMENT_COMPLETED",
        "signature": "b2fl8PdPRVsq0vre6DpdHJwHse8Ln+WlY0Vx32aKxtE=",
        "data": {
            "invoiceId": 16,
            "amount": "300.00",
            "currency_code": "EUR",
            "created_at": 1691143279,
            "status": "paid",
            "description": "Jane Roe, flat 4",
            "identifier": "jane.roe",
            "email_id": "jane@example.com",
            "metadata": {"name": "Jane Roe", "phone": 919876543210, "note": "call after 6"},
            "paid": True,
            "tags": [],
        },
    }

    assert personal.mask(body) == {
        "id": "wh_1",
        "type": "PAYMENT_COMPLETED",
        "signature": personal.MASK,
        "data": {
            "invoiceId": 16,
            "amount": "300.00",
            "currency_code": "EUR",
            "created_at": 1691143279,
            "status": "paid",
            "description": personal.MASK,
            "identifier": personal.MASK,
            "email_id": personal.MASK,
            "metadata": {"name": personal.MASK, "phone": personal.MASK, "note": personal.MASK},
            "paid": True,
            "tags": [],
        },
    }
