"""Hostile input at the ingress: whatever the body or headers, the answer is a 4xx with a reason
(or, for a bug, a counted 500 with the request id), never a traceback, and nothing is published."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from hookpipe.ingress.app import PUBLISHER
from tests.conftest import RAPYD_ACCESS_KEY
from tests.ingress_support import (
    SEEDS,
    Ingress,
    dreamclass_body,
    refusal,
    signed,
    total_depth,
)

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel

# Deeper than any stack a JSON decoder recurses on.
DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize("provider", list(SEEDS))
async def test_a_body_nested_too_deeply_is_a_400(
    ingress: Ingress, broker: Channel, provider: str
) -> None:
    # Signed where the provider signs the body, so that the decode is reached.
    body, headers = signed(provider, DEEP) if provider != "dreamclass" else (DEEP, {})

    response = await ingress.post(provider, body, headers)

    assert await refusal(response) == (400, "body is nested too deeply")
    assert await total_depth(broker) == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-unknown"])
@pytest.mark.parametrize("provider", list(SEEDS))
async def test_a_compressed_body_is_refused_with_415(
    ingress: Ingress, broker: Channel, provider: str, encoding: str
) -> None:
    # A gzip magic number followed by garbage: aiohttp would fail inflating it.
    body = b"\x1f\x8b" + b"garbage" * 10

    response = await ingress.post(provider, body, {"Content-Encoding": encoding})

    status, reason = await refusal(response)
    assert status == 415
    assert "Content-Encoding" in reason
    assert await total_depth(broker) == 0


async def test_identity_encoding_is_accepted(ingress: Ingress, broker: Channel) -> None:
    body, headers = signed("jodo")

    response = await ingress.post("jodo", body, {**headers, "Content-Encoding": "identity"})

    assert response.status == 200


async def test_a_malformed_chunked_body_is_a_400(ingress: Ingress, broker: Channel) -> None:
    server = ingress.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /webhooks/jodo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nX-Jodo-Signature: " + b"0" * 64 + b"\r\n\r\n"
        b"zz-not-a-chunk-size\r\n{}\r\n0\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()

    assert status_line.split()[1] == b"400"
    assert await total_depth(broker) == 0


async def test_a_wrong_rapyd_access_key_is_a_401(ingress: Ingress, broker: Channel) -> None:
    body, headers = signed("rapyd")

    wrong = await ingress.post("rapyd", body, {**headers, "access_key": "rak_someone_else"})
    right = await ingress.post("rapyd", body, {**headers, "access_key": RAPYD_ACCESS_KEY})

    assert await refusal(wrong) == (401, "access key mismatch")
    assert right.status == 200


async def test_an_unexpected_error_is_a_counted_500_with_the_request_id(
    ingress: Ingress, broker: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ingress.app[PUBLISHER], "publish", broken)
    body = dreamclass_body()

    response = await ingress.post("dreamclass", body, {"X-Request-ID": "req-500"})

    assert response.status == 500
    assert await response.json() == {"error": "internal error", "request_id": "req-500"}
    metrics = await (await ingress.client.get("/metrics")).text()
    assert 'hookpipe_ingress_requests_total{provider="dreamclass",status="500"} 1.0' in metrics
