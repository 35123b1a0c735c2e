"""Flexprice (Standard Webhooks): svix-* or webhook-* headers, `v1,<base64>` entries over
`{id}.{timestamp}.{body}`, keyed by the decoded secret; 5 min tolerance both ways."""

from __future__ import annotations

import base64
import time

import aio_pika
import pytest
from multidict import CIMultiDict

from hookpipe.ingress import flexprice
from hookpipe.ingress.errors import AuthenticationFailed
from hookpipe.ingress.flexprice import FlexpriceSettings, svix_keys
from tests.conftest import FLEXPRICE_SECRET, get_message
from tests.ingress_support import Ingress, MakeSettings, StartIngress, refusal, signed

pytest_plugins = ("tests.ingress_fixtures",)

# The test vector of the Standard Webhooks reference libraries, whose own tests use it.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another endpoint's key").decode()


def _key(secret: str) -> bytes:
    return svix_keys(secret)[0]


def _vector_headers(**changes: str) -> CIMultiDict[str]:
    headers = {
        "svix-id": VECTOR_ID,
        "svix-timestamp": str(VECTOR_TIMESTAMP),
        "svix-signature": VECTOR_SIGNATURE,
    }
    headers.update(changes)
    return CIMultiDict(headers)


def test_the_standard_webhooks_test_vector_verifies() -> None:
    msg_id = flexprice.verify(
        VECTOR_BODY, _vector_headers(), (_key(VECTOR_SECRET),), now=VECTOR_TIMESTAMP
    )
    assert msg_id == VECTOR_ID


def test_the_test_vector_signs_to_its_signature() -> None:
    headers = flexprice.sign(
        VECTOR_BODY, key=_key(VECTOR_SECRET), msg_id=VECTOR_ID, timestamp=VECTOR_TIMESTAMP
    )
    assert headers["svix-signature"] == VECTOR_SIGNATURE


def test_the_test_vector_is_stale_five_minutes_later() -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        flexprice.verify(
            VECTOR_BODY, _vector_headers(), (_key(VECTOR_SECRET),), now=VECTOR_TIMESTAMP + 301
        )
    assert caught.value.reason == "timestamp too old"


async def test_the_test_vector_passes_authentication_through_http_with_a_fixed_clock(
    start_ingress: StartIngress, make_settings: MakeSettings
) -> None:
    ingress = await start_ingress(
        make_settings(declare_topology=False), clock=lambda: float(VECTOR_TIMESTAMP)
    )

    response = await ingress.post("flexprice", VECTOR_BODY, dict(_vector_headers()))

    # Authentic, but the vector's body has no event_type: 400, not 401.
    assert response.status == 400
    assert "event_type" in (await response.json())["error"]


async def _post(ingress: Ingress, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    return await refusal(await ingress.post("flexprice", body, headers))


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_missing_header(refusing_ingress: Ingress, header: str) -> None:
    body, headers = signed("flexprice")
    del headers[header]
    reason = {
        "svix-id": "missing id header",
        "svix-timestamp": "missing timestamp",
        "svix-signature": "missing signature",
    }[header]
    assert await _post(refusing_ingress, body, headers) == (401, reason)


async def test_wrong_secret(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice", secret=OTHER_SECRET)
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_tampered_body(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    tampered = body.replace(b'"149.99"', b'"1.99"')
    assert tampered != body
    assert await _post(refusing_ingress, tampered, headers) == (401, "signature mismatch")


async def test_tampered_id(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    headers["svix-id"] = "msg_another"
    assert await _post(refusing_ingress, body, headers) == (401, "signature mismatch")


async def test_stale_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice", now=time.time() - 301)
    assert await _post(refusing_ingress, body, headers) == (401, "timestamp too old")


async def test_future_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice", now=time.time() + 301)
    assert await _post(refusing_ingress, body, headers) == (401, "timestamp in the future")


async def test_garbage_timestamp(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    headers["svix-timestamp"] = "1e9"
    assert await _post(refusing_ingress, body, headers) == (401, "malformed timestamp")


async def test_signature_that_is_not_base64(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    headers["svix-signature"] = "v1,***not-base64***"
    assert await _post(refusing_ingress, body, headers) == (401, "malformed signature")


async def test_signature_without_its_version(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    headers["svix-signature"] = headers["svix-signature"].removeprefix("v1,")
    assert await _post(refusing_ingress, body, headers) == (401, "malformed signature")


async def test_signature_of_another_version_only(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice")
    headers["svix-signature"] = headers["svix-signature"].replace("v1,", "v1a,")
    assert await _post(refusing_ingress, body, headers) == (401, "no v1 signature")


async def test_id_header_that_is_not_a_token(refusing_ingress: Ingress) -> None:
    body, headers = signed("flexprice", msg_id="msg with spaces")
    assert await _post(refusing_ingress, body, headers) == (401, "malformed id header")


async def test_one_matching_entry_among_several_is_enough(
    ingress: Ingress, broker: aio_pika.abc.AbstractChannel
) -> None:
    body, headers = signed("flexprice")
    wrong = signed("flexprice", secret=OTHER_SECRET)[1]["svix-signature"]
    headers["svix-signature"] = f"v2,abc {wrong} {headers['svix-signature']}"

    response = await ingress.post("flexprice", body, headers)

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "flexprice.payment.created")).body == body


@pytest.mark.parametrize("secret", [OTHER_SECRET, FLEXPRICE_SECRET], ids=["first", "second"])
async def test_every_configured_secret_is_accepted_during_rotation(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    broker: aio_pika.abc.AbstractChannel,
    secret: str,
) -> None:
    keys = (_key(OTHER_SECRET), _key(FLEXPRICE_SECRET))
    ingress = await start_ingress(make_settings().with_section(FlexpriceSettings, secrets=keys))
    body, headers = signed("flexprice", secret=secret)

    response = await ingress.post("flexprice", body, headers)

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "flexprice.payment.created")).body == body


def test_a_malformed_header_raises_the_typed_error_only() -> None:
    key = (_key(VECTOR_SECRET),)
    for headers in (
        _vector_headers(**{"svix-signature": "v1,\u00e9\u00e9"}),
        _vector_headers(**{"svix-signature": "v1"}),
        _vector_headers(**{"svix-timestamp": "\u0661\u0662"}),
        _vector_headers(**{"svix-id": "\u00e9"}),
        _vector_headers(**{"svix-timestamp": "9" * 40}),
    ):
        with pytest.raises(AuthenticationFailed):
            flexprice.verify(VECTOR_BODY, headers, key, now=VECTOR_TIMESTAMP)
