"""Rapyd: salt, timestamp and signature headers; base64 of the hex HMAC of
url + salt + timestamp + access key + secret key + body; a timestamp tolerance."""

from __future__ import annotations

import time

import aio_pika

from tests import signers
from tests.conftest import RAPYD_ACCESS_KEY, RAPYD_SECRET_KEY, get_message
from tests.ingress_support import RAPYD_URL, Ingress, refusal, signed

pytest_plugins = ("tests.ingress_fixtures",)


async def _post(ingress: Ingress, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    return await refusal(await ingress.post("rapyd", body, headers))


async def test_missing_salt(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    del headers["salt"]
    assert await _post(refusing_ingress, body, headers) == (401, "missing salt")


async def test_missing_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    del headers["timestamp"]
    assert await _post(refusing_ingress, body, headers) == (401, "missing timestamp")


async def test_missing_signature(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    del headers["signature"]
    assert await _post(refusing_ingress, body, headers) == (401, "missing signature")


async def test_wrong_secret_key(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd", secret_key="rsk_someone_else")
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_wrong_access_key(refusing_ingress: Ingress) -> None:
    body = signed("rapyd")[0]
    headers = signers.rapyd(
        body,
        url=RAPYD_URL,
        access_key="rak_other",
        secret_key=RAPYD_SECRET_KEY,
        salt="abcdef12",
        timestamp=int(time.time()),
    )
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_wrong_webhook_url(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd", url="https://hooks.example.test/webhooks/other")
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_tampered_body(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    tampered = body.replace(b'"amount": 800', b'"amount": 8')
    assert tampered != body
    assert await _post(refusing_ingress, tampered, headers) == (401, "signature mismatch")


async def test_tampered_salt(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    headers["salt"] = "another-salt"
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_stale_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd", now=time.time() - 301)
    assert await _post(refusing_ingress, body, headers) == (401, "timestamp too old")


async def test_future_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd", now=time.time() + 301)
    assert await _post(refusing_ingress, body, headers) == (401, "timestamp in the future")


async def test_garbage_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    headers["timestamp"] = "yesterday"
    assert await _post(refusing_ingress, body, headers) == (401, "malformed timestamp")


async def test_timestamp_in_other_digits(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    # Arabic-Indic digits: str.isdigit() says yes and int() reads them; the check must not.
    arabic = "".join(chr(0x660 + int(d)) for d in headers["timestamp"])
    headers["timestamp"] = arabic.encode().decode("latin-1")
    assert await _post(refusing_ingress, body, headers) == (401, "malformed timestamp")


async def test_signature_that_is_not_base64(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    headers["signature"] = "%%% not base64 %%%"
    assert await _post(refusing_ingress, body, headers) == (401, "malformed signature")


async def test_salt_that_is_not_ascii(refusing_ingress: Ingress) -> None:
    body, headers = signed("rapyd")
    headers["salt"] = "sälz".encode().decode("latin-1")
    assert await _post(refusing_ingress, body, headers) == (401, "malformed salt")


async def test_timestamp_within_the_tolerance_is_accepted(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    body, headers = signed("rapyd", now=time.time() - 240)

    response = await ingress.post("rapyd", body, headers)

    assert response.status == 200, await response.text()
    message = await get_message(broker, "rapyd.INVOICE_PAYMENT_CREATED")
    assert message.body == body
    assert RAPYD_ACCESS_KEY.encode() not in message.body
