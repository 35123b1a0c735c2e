"""A worker whose broker connection drops reconnects within HOOKPIPE_RECONNECT_INTERVAL, as the
ingress does, and goes on consuming."""

from __future__ import annotations

import time
from collections.abc import Callable

import aio_pika

from hookpipe.settings import Settings
from hookpipe.workers.handlers.base import Delivery
from hookpipe.workers.runtime import Worker
from tests import tcp_proxy
from tests.tcp_proxy import TcpProxy
from tests.worker_support import publish_event, wait_until

amqp_proxy = tcp_proxy.amqp_proxy
Channel = aio_pika.abc.AbstractChannel
Q = "jodo.order.payment.debited"


async def test_the_worker_consumes_again_within_the_reconnect_interval(
    broker: Channel,
    amqp_url: str,
    amqp_proxy: TcpProxy,
    make_settings: Callable[..., Settings],
) -> None:
    done: list[str] = []

    async def handler(delivery: Delivery) -> None:
        done.append(delivery.event_id)

    settings = make_settings(amqp_url=amqp_proxy.url_for(amqp_url), reconnect_interval=0.5)
    async with Worker(settings, {Q: handler}) as worker:
        await publish_event(broker, Q, event_id="before")
        await wait_until(lambda: done == ["before"], what="the first event")

        await amqp_proxy.cut()
        assert worker._connection is not None  # what the test watches
        await wait_until(lambda: not worker._connection.connected.is_set(), what="the loss")  # type: ignore[union-attr]
        amqp_proxy.restore()
        back_from = time.monotonic()
        await publish_event(broker, Q, event_id="after")
        await wait_until(lambda: done == ["before", "after"], what="the event after the outage")

    # aio-pika's own default would have waited 5 s before its first attempt.
    assert time.monotonic() - back_from < 3.0
