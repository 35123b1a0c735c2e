"""The ingress end to end against the real RabbitMQ: what is accepted lands unchanged in its queue,
what is refused never reaches the broker."""

from __future__ import annotations

import time

import aio_pika
import orjson
import pytest
from aiohttp import payload

from hookpipe import constants as c
from hookpipe.ingress.jodo import JodoSettings
from tests import signers
from tests.conftest import JODO_OLD_SECRET, JODO_SECRET, fixture_bytes, get_message, queue_depth
from tests.ingress_support import (
    SEEDS,
    Ingress,
    MakeSettings,
    StartIngress,
    dreamclass_body,
    signed,
    total_depth,
)

pytest_plugins = ("tests.ingress_fixtures",)


Channel = aio_pika.abc.AbstractChannel


@pytest.mark.parametrize("provider", list(SEEDS))
async def test_seed_is_accepted_and_queued_byte_for_byte(
    ingress: Ingress, broker: Channel, provider: str
) -> None:
    body, headers = signed(provider)
    _, queue, event_id = SEEDS[provider]
    before_ms = time.time_ns() // 1_000_000

    response = await ingress.post(provider, body, headers)

    assert response.status == 200, await response.text()
    assert await response.json() == {"status": "accepted", "id": event_id}
    message = await get_message(broker, queue)
    assert message.body == body
    assert message.message_id == f"{provider}:{event_id}"
    assert message.type == queue.split(".", 1)[1]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.app_id == "hookpipe-ingress"
    assert message.timestamp is not None
    assert abs(message.timestamp.timestamp() - before_ms / 1000) < 5
    headers_out = message.headers
    assert headers_out[c.HEADER_PROVIDER] == provider
    assert headers_out[c.HEADER_EVENT_ID] == event_id
    assert headers_out[c.HEADER_ATTEMPT] == 0
    received_at = headers_out[c.HEADER_RECEIVED_AT]
    assert isinstance(received_at, int)
    assert before_ms <= received_at <= time.time_ns() // 1_000_000
    assert headers_out[c.HEADER_REQUEST_ID] == response.headers["X-Request-ID"]


async def test_flexprice_webhook_headers_are_accepted_like_svix_headers(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("flexprice", prefix="webhook", msg_id="msg_webhook_prefix")
    assert "svix-id" not in headers

    response = await ingress.post("flexprice", body, headers)

    assert response.status == 200, await response.text()
    message = await get_message(broker, "flexprice.payment.created")
    assert message.message_id == "flexprice:msg_webhook_prefix"


async def test_dreamclass_derived_event_type_is_routed_by_its_type(
    ingress: Ingress, broker: Channel
) -> None:
    body = dreamclass_body(event_type="PAYMENT_DELETED")

    response = await ingress.post("dreamclass", body)

    assert response.status == 200, await response.text()
    message = await get_message(broker, "dreamclass.PAYMENT_DELETED")
    assert message.body == body


@pytest.mark.parametrize("secret", [JODO_SECRET, JODO_OLD_SECRET], ids=["first", "second"])
async def test_every_configured_jodo_secret_is_accepted_during_rotation(
    ingress: Ingress, broker: Channel, secret: str
) -> None:
    body, headers = signed("jodo", secret=secret)

    response = await ingress.post("jodo", body, headers)

    assert response.status == 200, await response.text()
    assert (await get_message(broker, "jodo.order.payment.debited")).body == body


async def test_an_event_type_no_queue_is_bound_for_lands_in_unrouted(
    ingress: Ingress, broker: Channel
) -> None:
    body = fixture_bytes("jodo.order.payment.debited.json").replace(
        b'"order.payment.debited"', b'"order.payment.something_new"'
    )
    response = await ingress.post("jodo", body, signers.jodo(body, JODO_SECRET))

    assert response.status == 200, await response.text()
    message = await get_message(broker, c.UNROUTED_QUEUE)
    assert message.body == body
    assert message.routing_key == "jodo.order.payment.something_new"
    assert message.type == "order.payment.something_new"


async def test_the_same_webhook_twice_without_the_replay_guard_is_published_twice(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    ingress = await start_ingress(make_settings(replay_memory=0))
    body, headers = signed("jodo")

    first = await ingress.post("jodo", body, headers)
    second = await ingress.post("jodo", body, headers)

    assert (first.status, second.status) == (200, 200)
    # Both reach the queue; the workers apply the event once (they dedupe on the event id).
    one = await get_message(broker, "jodo.order.payment.debited")
    two = await get_message(broker, "jodo.order.payment.debited")
    assert one.message_id == two.message_id == "jodo:45bb1387-2a83-4fdb-a149-e7dec81043f0"


async def test_a_sane_request_id_is_kept_and_another_is_replaced(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("jodo")
    other, other_headers = signed("jodo", body.replace(b"45bb1387", b"55bb1387"))

    kept = await ingress.post("jodo", body, {**headers, "X-Request-ID": "req-123.abc"})
    replaced = await ingress.post(
        "jodo", other, {**other_headers, "X-Request-ID": "bad id\twith spaces"}
    )

    assert kept.headers["X-Request-ID"] == "req-123.abc"
    assert replaced.headers["X-Request-ID"] != "bad id\twith spaces"
    first = await get_message(broker, "jodo.order.payment.debited")
    second = await get_message(broker, "jodo.order.payment.debited")
    assert first.headers[c.HEADER_REQUEST_ID] == "req-123.abc"
    assert second.headers[c.HEADER_REQUEST_ID] == replaced.headers["X-Request-ID"]


# --- refused: nothing reaches the broker -------------------------------------------------------


async def test_oversized_body_is_refused_with_413(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    ingress = await start_ingress(make_settings(max_body_bytes=256))
    body, headers = signed("jodo")
    assert len(body) > 256

    response = await ingress.post("jodo", body, headers)

    assert response.status == 413
    assert await response.json() == {"error": "body over 256 bytes"}
    assert await total_depth(broker) == 0


async def test_oversized_body_without_content_length_is_refused_with_413(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    ingress = await start_ingress(make_settings(max_body_bytes=256))
    body, headers = signed("jodo")

    async def chunks() -> object:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    response = await ingress.client.post(
        "/webhooks/jodo",
        data=payload.AsyncIterablePayload(chunks()),  # type: ignore[arg-type]
        headers=headers,
    )

    assert response.status == 413
    assert await total_depth(broker) == 0


async def test_body_that_is_not_json_is_refused_with_400(ingress: Ingress, broker: Channel) -> None:
    body = b"event_id=1&event=order.payment.debited"
    response = await ingress.post("jodo", body, signers.jodo(body, JODO_SECRET))

    assert response.status == 400
    assert await response.json() == {"error": "body is not JSON"}
    assert await total_depth(broker) == 0


async def test_empty_body_is_refused_with_400(ingress: Ingress, broker: Channel) -> None:
    response = await ingress.post("jodo", b"", signers.jodo(b"", JODO_SECRET))

    assert response.status == 400
    assert await response.json() == {"error": "empty body"}
    assert await total_depth(broker) == 0


@pytest.mark.parametrize("provider", ["jodo", "rapyd"])
async def test_body_without_event_id_is_refused_with_400(
    ingress: Ingress, broker: Channel, provider: str
) -> None:
    id_field = b'"event_id"' if provider == "jodo" else b'"id": "wh_'
    body = fixture_bytes(SEEDS[provider][0]).replace(id_field, id_field.replace(b"id", b"xid"), 1)
    body, headers = signed(provider, body)

    response = await ingress.post(provider, body, headers)

    assert response.status == 400
    assert "missing required field" in (await response.json())["error"]
    assert await total_depth(broker) == 0


async def test_dreamclass_body_without_id_is_refused_with_400(
    ingress: Ingress, broker: Channel
) -> None:
    document = orjson.loads(signed("dreamclass")[0])
    del document["id"]

    response = await ingress.post("dreamclass", orjson.dumps(document))

    assert response.status == 400
    assert await response.json() == {
        "error": "invalid envelope: Object missing required field `id`"
    }
    assert await total_depth(broker) == 0


@pytest.mark.parametrize("provider", list(SEEDS))
async def test_body_without_event_type_is_refused_with_400(
    ingress: Ingress, broker: Channel, provider: str
) -> None:
    type_field = {
        "jodo": b'"event"',
        "dreamclass": b'"type"',
        "rapyd": b'"type": "INVOICE',
        "flexprice": b'"event_type"',
    }[provider]
    seed = signed(provider)[0]
    body = seed.replace(type_field, type_field.replace(b'"', b'"x', 1), 1)
    assert body != seed
    body, headers = signed(provider, body) if provider != "dreamclass" else (body, {})

    response = await ingress.post(provider, body, headers)

    assert response.status == 400, await response.text()
    assert "missing required field" in (await response.json())["error"]
    assert await total_depth(broker) == 0


async def test_event_id_that_cannot_be_a_message_id_is_refused_with_400(
    ingress: Ingress, broker: Channel
) -> None:
    body = fixture_bytes("jodo.order.payment.debited.json").replace(
        b"45bb1387-2a83-4fdb-a149-e7dec81043f0", b"x" * 300
    )
    response = await ingress.post("jodo", body, signers.jodo(body, JODO_SECRET))

    assert response.status == 400
    assert await total_depth(broker) == 0


async def test_unknown_provider_is_refused_with_404(ingress: Ingress, broker: Channel) -> None:
    body, headers = signed("jodo")

    response = await ingress.post("stripe", body, headers)

    assert response.status == 404
    assert "unknown provider" in (await response.json())["error"]
    assert await total_depth(broker) == 0


async def test_unconfigured_provider_is_refused_with_404(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    ingress = await start_ingress(make_settings().with_section(JodoSettings, secrets=()))
    body, headers = signed("jodo")

    response = await ingress.post("jodo", body, headers)

    assert response.status == 404
    error = (await response.json())["error"]
    assert "jodo is not configured" in error
    # Which setting is missing is said in the log, not to the caller.
    assert "HOOKPIPE_JODO_SECRET" not in error
    assert await total_depth(broker) == 0


async def test_bad_signature_is_refused_with_401_and_nothing_is_published(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("jodo", secret="not-the-secret")

    response = await ingress.post("jodo", body, headers)

    assert response.status == 401
    assert await response.json() == {"error": "signature mismatch"}
    assert await total_depth(broker) == 0


# --- health, readiness, metrics ----------------------------------------------------------------


async def test_healthz_and_readyz_answer_200_when_connected(ingress: Ingress) -> None:
    health = await ingress.client.get("/healthz")
    ready = await ingress.client.get("/readyz")

    assert health.status == 200
    assert ready.status == 200
    assert await ready.json() == {"status": "ready"}


async def test_metrics_count_requests_auth_failures_and_publish_latency(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("jodo")
    assert (await ingress.post("jodo", body, headers)).status == 200
    assert (await ingress.post("jodo", body, {"X-Jodo-Signature": "0" * 64})).status == 401
    assert (await ingress.post("nope", body, headers)).status == 404

    response = await ingress.client.get("/metrics")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'hookpipe_ingress_requests_total{provider="jodo",status="200"} 1.0' in text
    assert 'hookpipe_ingress_requests_total{provider="jodo",status="401"} 1.0' in text
    assert 'hookpipe_ingress_requests_total{provider="unknown",status="404"} 1.0' in text
    assert (
        'hookpipe_ingress_auth_failures_total{provider="jodo",reason="signature mismatch"} 1.0'
        in text
    )
    assert "hookpipe_ingress_publish_seconds_count 1.0" in text


async def test_ingress_declares_the_topology_at_start(
    start_ingress: StartIngress,
    amqp: aio_pika.abc.AbstractRobustConnection,
    make_settings: MakeSettings,
) -> None:
    channel = await amqp.channel()
    # A queue of the topology, deleted: the ingress's start must bring it back.
    await channel.queue_delete("flexprice.payment.pending")

    await start_ingress(make_settings())

    assert await queue_depth(channel, "flexprice.payment.pending") == 0
    await channel.close()
