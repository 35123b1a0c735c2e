"""What the ingress logs: one line per request (accepted ones at debug, refused ones at warning),
bound to provider / event / request id, and never a secret, a signature or the personal data a
webhook carries."""

from __future__ import annotations

import aio_pika
from structlog.testing import capture_logs

from hookpipe.logs import merge_fields
from tests import signers
from tests.conftest import JODO_SECRET, fixture_bytes
from tests.ingress_support import Ingress, dreamclass_body, signed

pytest_plugins = ("tests.ingress_fixtures",)

# What the Jodo and DreamClass fixtures hold that must never reach a log line.
PERSONAL = ("Ron Rivest", "customer@example.com", "9876543210", "Sample note")


def _forbidden(headers: dict[str, str]) -> tuple[str, ...]:
    return (*PERSONAL, JODO_SECRET, *headers.values())


async def test_an_accepted_webhook_logs_one_line_with_its_context(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    body, headers = signed("jodo")
    with capture_logs(processors=[merge_fields]) as logs:
        response = await ingress.post("jodo", body, {**headers, "X-Request-ID": "req-log-1"})
    assert response.status == 200

    lines = [entry for entry in logs if entry["event"] == "webhook accepted"]
    assert len(lines) == 1
    line = lines[0]
    assert line["log_level"] == "debug"
    assert line["provider"] == "jodo"
    assert line["event_id"] == "45bb1387-2a83-4fdb-a149-e7dec81043f0"
    assert line["event_type"] == "order.payment.debited"
    assert line["request_id"] == "req-log-1"
    text = repr(logs)
    for value in _forbidden(headers):
        assert value not in text


async def test_a_refused_webhook_logs_a_warning_with_the_reason_only(
    refusing_ingress: Ingress,
) -> None:
    body = fixture_bytes("jodo.order.payment.debited.json")
    headers = signers.jodo(body, "someone-elses-secret")
    with capture_logs(processors=[merge_fields]) as logs:
        response = await refusing_ingress.post("jodo", body, headers)
    assert response.status == 401

    lines = [entry for entry in logs if entry["event"] == "webhook refused"]
    assert len(lines) == 1
    line = lines[0]
    assert line["log_level"] == "warning"
    assert line["provider"] == "jodo"
    assert line["status"] == 401
    assert line["reason"] == "signature mismatch"
    assert "request_id" in line
    # Refused before the body was trusted: its event id is not bound.
    assert "event_id" not in line
    text = repr(logs)
    for value in _forbidden(headers):
        assert value not in text
    assert signers.jodo(body, JODO_SECRET)["X-Jodo-Signature"] not in text


async def test_each_request_starts_with_a_clean_context(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    accepted_body, accepted_headers = signed("jodo")
    with capture_logs(processors=[merge_fields]) as logs:
        # One keep-alive connection serves both: the second must not inherit the first's event.
        assert (await ingress.post("jodo", accepted_body, accepted_headers)).status == 200
        assert (await ingress.post("jodo", b"{}", {"X-Jodo-Signature": "0" * 64})).status == 401

    refused = [entry for entry in logs if entry["event"] == "webhook refused"]
    assert len(refused) == 1
    assert "event_id" not in refused[0]


async def test_dreamclass_logs_carry_no_signature_or_notes(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    body = dreamclass_body()
    with capture_logs(processors=[merge_fields]) as logs:
        assert (await ingress.post("dreamclass", body)).status == 200

    text = repr(logs)
    signature = signers.dreamclass_signature(
        "214fb720-2248-44e0-9bfd-72171f9e72de", "dreamclass-test-secret"
    )
    assert signature not in text
    assert "Sample note" not in text
    assert "dreamclass-test-secret" not in text
    assert any(entry.get("event_type") == "PAYMENT_CREATED" for entry in logs)
