"""The ingress's replay guard, and Jodo's optional maximum age: one captured webhook sent again
and again is published once."""

from __future__ import annotations

import time

import aio_pika
import orjson

from hookpipe.ingress.jodo import JodoSettings
from hookpipe.ingress.replay import ReplayGuard
from tests.conftest import fixture_bytes, queue_depth
from tests.ingress_support import (
    SEEDS,
    Ingress,
    MakeSettings,
    StartIngress,
    refusal,
    signed,
    total_depth,
)

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel


async def test_twenty_copies_of_one_webhook_are_published_once(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("jodo")

    statuses = [(await ingress.post("jodo", body, headers)).status for _ in range(20)]

    assert statuses == [200] * 20
    assert await queue_depth(broker, SEEDS["jodo"][1]) == 1
    metrics = await (await ingress.client.get("/metrics")).text()
    assert 'hookpipe_ingress_replays_total{provider="jodo"} 19.0' in metrics
    assert 'hookpipe_ingress_requests_total{provider="jodo",status="200"} 20.0' in metrics


async def test_a_webhook_the_broker_did_not_confirm_is_published_when_retried(
    ingress: Ingress, broker: Channel
) -> None:
    body, headers = signed("jodo")
    await ingress.publisher.close()  # the broker away: 503, nothing remembered

    refused = await ingress.post("jodo", body, headers)
    ingress.publisher.start()
    await ingress.wait_ready()
    retried = await ingress.post("jodo", body, headers)

    assert (refused.status, retried.status) == (503, 200)
    assert await queue_depth(broker, SEEDS["jodo"][1]) == 1


async def test_the_same_event_id_of_two_providers_is_two_webhooks(
    ingress: Ingress, broker: Channel
) -> None:
    for provider in ("jodo", "rapyd"):
        body, headers = signed(provider)
        assert (await ingress.post(provider, body, headers)).status == 200

    assert await total_depth(broker) == 2


def test_the_memory_holds_the_last_ids_only() -> None:
    guard = ReplayGuard(3)
    for key in ("a", "b", "c", "d"):
        guard.accepted(key)

    assert len(guard) == 3
    assert not guard.seen("a")
    assert all(guard.seen(key) for key in ("b", "c", "d"))


def test_a_guard_of_size_zero_remembers_nothing() -> None:
    guard = ReplayGuard(0)
    guard.accepted("a")

    assert not guard.seen("a")


def test_a_flood_of_distinct_ids_stays_within_the_bound() -> None:
    guard = ReplayGuard(1000)
    for n in range(100_000):
        guard.accepted(f"jodo:{n}")

    assert len(guard) == 1000
    assert guard.seen("jodo:99999")


def _jodo_at(timestamp: int) -> bytes:
    document = orjson.loads(fixture_bytes("jodo.order.payment.debited.json"))
    document["timestamp"] = timestamp
    return orjson.dumps(document)


async def test_jodo_max_age_refuses_an_old_signed_timestamp(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    ingress = await start_ingress(make_settings().with_section(JodoSettings, max_age=3600.0))
    now = int(time.time())

    old = await ingress.post("jodo", *signed("jodo", _jodo_at(now - 7200)))
    fresh = await ingress.post("jodo", *signed("jodo", _jodo_at(now - 60)))

    assert await refusal(old) == (401, "timestamp too old")
    assert fresh.status == 200
    assert await total_depth(broker) == 1


async def test_without_max_age_an_old_jodo_timestamp_is_accepted(
    ingress: Ingress, broker: Channel
) -> None:
    # The seed's own timestamp is from 2023.
    response = await ingress.post("jodo", *signed("jodo"))

    assert response.status == 200
