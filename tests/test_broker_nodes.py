"""Several broker nodes in HOOKPIPE_AMQP_URL: a process connects to any that answers, and when
its node goes away it reconnects to another. Two TCP proxies in front of the local RabbitMQ play
two nodes of one cluster; cutting one for good is that node dying."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest

from hookpipe.broker import connect
from hookpipe.settings import Settings
from hookpipe.workers.handlers.base import Delivery
from hookpipe.workers.runtime import Worker
from tests.conftest import get_message
from tests.ingress_support import StartIngress, signed
from tests.tcp_proxy import TcpProxy
from tests.worker_support import free_port, publish_event, wait_until

Channel = aio_pika.abc.AbstractChannel
Q = "jodo.order.payment.debited"

pytest_plugins = ("tests.ingress_fixtures",)


@pytest.fixture
async def two_nodes() -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    async with TcpProxy("127.0.0.1", 5672) as one, TcpProxy("127.0.0.1", 5672) as two:
        yield one, two


def _listing(amqp_url: str, *proxies: TcpProxy) -> str:
    return ",".join(proxy.url_for(amqp_url) for proxy in proxies)


async def test_a_node_that_does_not_answer_is_passed_over(amqp_url: str) -> None:
    async with TcpProxy("127.0.0.1", 5672) as live:
        dead = amqp_url.replace("127.0.0.1:5672", f"127.0.0.1:{free_port()}")
        for _ in range(3):  # whichever order the nodes are tried in
            connection = await connect(f"{dead},{live.url_for(amqp_url)}", "test")
            assert connection.connected.is_set()
            await connection.close()


async def test_a_worker_whose_node_dies_consumes_again_through_another(
    broker: Channel,
    amqp_url: str,
    two_nodes: tuple[TcpProxy, TcpProxy],
    make_settings: Callable[..., Settings],
) -> None:
    done: list[str] = []

    async def handler(delivery: Delivery) -> None:
        done.append(delivery.event_id)

    settings = make_settings(amqp_url=_listing(amqp_url, *two_nodes), reconnect_interval=0.3)
    async with Worker(settings, {Q: handler}):
        await publish_event(broker, Q, event_id="before")
        await wait_until(lambda: done == ["before"], what="the first event")
        [used] = [proxy for proxy in two_nodes if proxy.connections]

        await used.cut()  # and never restored: that node is gone
        died = time.monotonic()
        await publish_event(broker, Q, event_id="after")
        # "before" may come again: its ack can be under way when the node goes (at least
        # once; the ledger's record of processed events makes the second run change nothing).
        await wait_until(lambda: "after" in done, what="the event after the loss")
        assert set(done) == {"before", "after"}
        [other] = [proxy for proxy in two_nodes if proxy is not used]
        assert other.connections == 1  # the worker's connection, through the other node
        assert used.connections == 0

    assert time.monotonic() - died < 5.0


async def test_an_ingress_whose_node_dies_accepts_again_through_another(
    broker: Channel,
    amqp_url: str,
    two_nodes: tuple[TcpProxy, TcpProxy],
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(amqp_url=_listing(amqp_url, *two_nodes), reconnect_interval=0.3)
    ingress = await start_ingress(settings)
    [used] = [proxy for proxy in two_nodes if proxy.connections]

    await used.cut()  # that node is gone
    died = time.monotonic()
    await wait_until(lambda: not ingress.publisher.ready, what="the ingress to notice")
    await ingress.wait_ready()
    body, headers = signed("jodo")
    response = await ingress.post("jodo", body, headers)

    assert response.status == 200
    assert time.monotonic() - died < 5.0
    assert (await get_message(broker, Q)).body == body
