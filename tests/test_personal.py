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
