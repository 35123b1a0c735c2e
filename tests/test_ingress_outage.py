"""The ingress without its broker: 503 with Retry-After while RabbitMQ is away, and back to 200
by itself when it returns. A TCP proxy between the ingress and RabbitMQ plays the outage."""

from __future__ import annotations

import aio_pika
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from yarl import URL

from tests import tcp_proxy
from tests.conftest import get_message, queue_depth
from tests.ingress_support import Ingress, MakeSettings, StartIngress, fresh_jodo, signed
from tests.tcp_proxy import TcpProxy
from tests.worker_support import wait_until

pytest_plugins = ("tests.ingress_fixtures",)

amqp_proxy = tcp_proxy.amqp_proxy
Channel = aio_pika.abc.AbstractChannel
QUEUE = "jodo.order.payment.debited"


async def _through_proxy(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    amqp_url: str,
    proxy: TcpProxy,
    *,
    ready: bool = True,
    publish_timeout: float = 2.0,
) -> Ingress:
    # Reconnecting every 0.1 s rather than the ingress's every second: short waits for fast
    # tests, as the test settings' retry schedule has.
    url = URL(proxy.url_for(amqp_url)).update_query(reconnect_interval="0.1")
    settings = make_settings(amqp_url=str(url), publish_timeout=publish_timeout)
    return await start_ingress(settings, ready=ready)


async def _assert_unavailable(ingress: Ingress) -> None:
    body, headers = fresh_jodo()
    response = await ingress.post("jodo", body, headers)
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert await response.json() == {"error": "broker unavailable"}
    ready = await ingress.client.get("/readyz")
    assert ready.status == 503


async def _assert_accepted_and_queued(ingress: Ingress, broker: Channel) -> None:
    body, headers = fresh_jodo()
    response = await ingress.post("jodo", body, headers)
    assert response.status == 200, await response.text()
    assert (await get_message(broker, QUEUE)).body == body
    assert await queue_depth(broker, QUEUE) == 0


async def test_a_broker_outage_answers_503_and_the_ingress_recovers_by_itself(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    amqp_url: str,
    amqp_proxy: TcpProxy,
    broker: Channel,
) -> None:
    ingress = await _through_proxy(start_ingress, make_settings, amqp_url, amqp_proxy)
    await _assert_accepted_and_queued(ingress, broker)

    await amqp_proxy.cut()
    await wait_until(lambda: not ingress.publisher.ready, what="the ingress to notice the cut")
    await _assert_unavailable(ingress)
    assert await queue_depth(broker, QUEUE) == 0

    amqp_proxy.restore()
    await ingress.wait_ready()
    assert (await ingress.client.get("/readyz")).status == 200
    await _assert_accepted_and_queued(ingress, broker)


async def test_an_ingress_started_without_its_broker_answers_503_then_recovers(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    amqp_url: str,
    amqp_proxy: TcpProxy,
    broker: Channel,
) -> None:
    await amqp_proxy.cut()
    ingress = await _through_proxy(start_ingress, make_settings, amqp_url, amqp_proxy, ready=False)

    assert (await ingress.client.get("/healthz")).status == 200
    await _assert_unavailable(ingress)

    amqp_proxy.restore()
    await ingress.wait_ready()
    await _assert_accepted_and_queued(ingress, broker)


async def test_a_confirm_that_does_not_come_in_time_answers_503(
    start_ingress: StartIngress,
    make_settings: MakeSettings,
    amqp_url: str,
    amqp_proxy: TcpProxy,
    broker: Channel,
) -> None:
    ingress = await _through_proxy(
        start_ingress, make_settings, amqp_url, amqp_proxy, publish_timeout=0.3
    )
    body, headers = signed("jodo")

    amqp_proxy.freeze()
    response = await ingress.post("jodo", body, headers)
    amqp_proxy.thaw()

    assert response.status == 503
    assert "Retry-After" in response.headers
    # The broker got the message after all: the provider's retry makes a duplicate, which the
    # workers' deduplication absorbs. Nothing is lost either way.
    assert (await get_message(broker, QUEUE)).body == body
    await _assert_accepted_and_queued(ingress, broker)


async def test_a_channel_closed_by_the_client_is_replaced(
    start_ingress: StartIngress, broker: Channel
) -> None:
    ingress = await start_ingress()
    channel = ingress.publisher.channel
    assert channel is not None

    await channel.close()

    assert (await ingress.client.get("/readyz")).status == 503
    await ingress.wait_ready()
    assert ingress.publisher.channel is not channel
    await _assert_accepted_and_queued(ingress, broker)


async def test_a_channel_closed_by_the_broker_is_reopened(
    start_ingress: StartIngress, broker: Channel
) -> None:
    ingress = await start_ingress()
    channel = ingress.publisher.channel
    assert channel is not None
    underlay = await channel.get_underlay_channel()

    # Publishing to an exchange that does not exist makes the broker close the channel.
    with pytest.raises(ChannelNotFoundEntity):
        await underlay.basic_publish(b"{}", exchange="hookpipe.no-such-exchange", routing_key="x")
    assert underlay.is_closed

    await ingress.wait_ready()
    await _assert_accepted_and_queued(ingress, broker)
