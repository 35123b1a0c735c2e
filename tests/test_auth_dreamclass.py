"""DreamClass: the body's `signature` is base64(HMAC-SHA256(key, id)); optional HTTP Basic auth."""

from __future__ import annotations

import base64

import aio_pika
import orjson
import pytest

from hookpipe.errors import SettingsError
from hookpipe.ingress.app import create_app
from hookpipe.ingress.dreamclass import DreamClassSettings
from tests import signers
from tests.conftest import DREAMCLASS_SECRET, get_message
from tests.ingress_support import (
    Ingress,
    MakeSettings,
    StartIngress,
    dreamclass_body,
    refusal,
)

pytest_plugins = ("tests.ingress_fixtures",)


Channel = aio_pika.abc.AbstractChannel
EVENT_ID = "214fb720-2248-44e0-9bfd-72171f9e72de"


def _with_signature(signature: object) -> bytes:
    document = orjson.loads(dreamclass_body())
    document["signature"] = signature
    return orjson.dumps(document)


def _basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


async def test_missing_signature_field(refusing_ingress: Ingress) -> None:
    document = orjson.loads(dreamclass_body())
    del document["signature"]
    response = await refusing_ingress.post("dreamclass", orjson.dumps(document))
    assert await refusal(response) == (401, "missing signature")


async def test_wrong_secret(refusing_ingress: Ingress) -> None:
    body = dreamclass_body(secret="someone-elses-secret")
    response = await refusing_ingress.post("dreamclass", body)
    assert await refusal(response) == (401, "signature mismatch")


async def test_tampered_id(refusing_ingress: Ingress) -> None:
    body = dreamclass_body().replace(EVENT_ID.encode(), b"314fb720-2248-44e0-9bfd-72171f9e72de")
    response = await refusing_ingress.post("dreamclass", body)
    assert await refusal(response) == (401, "signature mismatch")


async def test_signature_that_is_not_base64(refusing_ingress: Ingress) -> None:
    response = await refusing_ingress.post("dreamclass", _with_signature("not base64 at all!"))
    assert await refusal(response) == (401, "malformed signature")


async def test_signature_of_the_wrong_length(refusing_ingress: Ingress) -> None:
    short = base64.b64encode(b"sixteen bytes!!!").decode()
    response = await refusing_ingress.post("dreamclass", _with_signature(short))
    assert await refusal(response) == (401, "malformed signature")


async def test_signature_that_is_not_a_string(refusing_ingress: Ingress) -> None:
    response = await refusing_ingress.post("dreamclass", _with_signature(12345))
    status, reason = await refusal(response)
    assert status == 400
    assert "$.signature" in reason


async def test_body_that_is_not_json(refusing_ingress: Ingress) -> None:
    response = await refusing_ingress.post("dreamclass", b"<xml/>")
    assert await refusal(response) == (400, "body is not JSON")


async def test_secret_rotation_accepts_the_old_secret(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    settings = make_settings().with_section(
        DreamClassSettings, secrets=("new-secret", DREAMCLASS_SECRET)
    )
    ingress = await start_ingress(settings)

    response = await ingress.post("dreamclass", dreamclass_body(secret=DREAMCLASS_SECRET))

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "dreamclass.PAYMENT_CREATED")).message_id == (
        f"dreamclass:{EVENT_ID}"
    )


async def test_base64_encoded_key(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    secret = base64.b64encode(b"\x00\x01raw key bytes\xff").decode()
    settings = make_settings().with_section(
        DreamClassSettings, secrets=(secret,), secret_encoding="base64"
    )
    ingress = await start_ingress(settings)
    document = orjson.loads(dreamclass_body())
    document["signature"] = signers.dreamclass_signature(EVENT_ID, secret, key_base64=True)
    body = orjson.dumps(document)

    response = await ingress.post("dreamclass", body)

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "dreamclass.PAYMENT_CREATED")).body == body


def test_base64_encoding_with_a_secret_that_is_not_base64_fails_at_start(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings().with_section(
        DreamClassSettings, secrets=("not*base64",), secret_encoding="base64"
    )
    with pytest.raises(SettingsError, match="HOOKPIPE_DREAMCLASS_SECRET") as caught:
        create_app(settings)
    assert "not*base64" not in str(caught.value)


@pytest.fixture
async def basic_ingress(start_ingress: StartIngress, make_settings: MakeSettings) -> Ingress:
    return await start_ingress(
        make_settings().with_section(DreamClassSettings, basic_auth=("dreamclass", "pa:ss"))
    )


async def test_basic_auth_missing(basic_ingress: Ingress) -> None:
    response = await basic_ingress.post("dreamclass", dreamclass_body())
    assert await refusal(response) == (401, "missing basic auth")


async def test_basic_auth_wrong_password(basic_ingress: Ingress) -> None:
    response = await basic_ingress.post("dreamclass", dreamclass_body(), _basic("dreamclass:nope"))
    assert await refusal(response) == (401, "basic auth mismatch")


async def test_basic_auth_of_another_scheme(basic_ingress: Ingress) -> None:
    headers = {"Authorization": "Bearer abc"}
    response = await basic_ingress.post("dreamclass", dreamclass_body(), headers)
    assert await refusal(response) == (401, "malformed basic auth")


async def test_basic_auth_that_is_not_base64(basic_ingress: Ingress) -> None:
    headers = {"Authorization": "Basic %%%"}
    response = await basic_ingress.post("dreamclass", dreamclass_body(), headers)
    assert await refusal(response) == (401, "malformed basic auth")


async def test_basic_auth_right_with_the_signature_is_accepted(
    basic_ingress: Ingress, broker: Channel
) -> None:
    body = dreamclass_body()
    response = await basic_ingress.post("dreamclass", body, _basic("dreamclass:pa:ss"))

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "dreamclass.PAYMENT_CREATED")).body == body


async def test_basic_auth_right_but_signature_wrong(basic_ingress: Ingress) -> None:
    body = dreamclass_body(secret="someone-elses-secret")
    response = await basic_ingress.post("dreamclass", body, _basic("dreamclass:pa:ss"))
    assert await refusal(response) == (401, "signature mismatch")
