"""The broker topology (events exchange, handled queues with their DLQs, delayed retries),
declared in the test run's own vhost."""

from __future__ import annotations

import aio_pika

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from tests.conftest import get_message, queue_depth


async def test_declare_is_idempotent(
    broker: aio_pika.abc.AbstractChannel, test_settings: Settings
) -> None:
    await topology.declare(broker, test_settings)
    await topology.declare(broker, test_settings)
    for name in handled_queues():
        assert await queue_depth(broker, name) == 0
        assert await queue_depth(broker, topology.dlq_name(name)) == 0


async def test_routing_key_reaches_its_own_queue_only(broker: aio_pika.abc.AbstractChannel) -> None:
    exchange = await broker.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(b"{}", message_id="jodo:1"), routing_key="jodo.order.payment.debited"
    )
    message = await get_message(broker, "jodo.order.payment.debited")
    assert message.message_id == "jodo:1"
    assert await queue_depth(broker, "jodo.direct.payment.cancelled") == 0


async def test_unbound_event_type_lands_in_unrouted(broker: aio_pika.abc.AbstractChannel) -> None:
    exchange = await broker.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(b"{}", message_id="flexprice:x"), routing_key="flexprice.wallet.created"
    )
    message = await get_message(broker, c.UNROUTED_QUEUE)
    assert message.routing_key == "flexprice.wallet.created"


async def test_retry_queue_expires_back_into_the_origin_queue(
    broker: aio_pika.abc.AbstractChannel, test_settings: Settings
) -> None:
    delay_ms = topology.retry_delays_ms(test_settings.retry)[0]
    retry_x = await broker.get_exchange(c.RETRY_PREFIX, ensure=False)
    await retry_x.publish(
        aio_pika.Message(
            b"again",
            headers={topology.RETRY_DELAY_HEADER: str(delay_ms)},
            expiration=delay_ms / 1000,
        ),
        routing_key="rapyd.INVOICE_PAYMENT_CREATED",
    )
    assert await queue_depth(broker, "rapyd.INVOICE_PAYMENT_CREATED") == 0
    message = await get_message(broker, "rapyd.INVOICE_PAYMENT_CREATED", timeout=5)
    assert message.body == b"again"
    assert await queue_depth(broker, "flexprice.payment.created") == 0


async def test_dead_letter_exchange_routes_to_the_queue_dlq(
    broker: aio_pika.abc.AbstractChannel,
) -> None:
    dlx = await broker.get_exchange(c.DEAD_LETTER_EXCHANGE, ensure=False)
    await dlx.publish(aio_pika.Message(b"dead"), routing_key="jodo.order.payment.debited.dlq")
    message = await get_message(broker, "jodo.order.payment.debited.dlq")
    assert message.body == b"dead"


async def test_queue_depth_counts_what_is_ready_and_leaves_it_there(
    broker: aio_pika.abc.AbstractChannel,
) -> None:
    # The tests' own measure of "nothing was published" must be able to see something.
    queue = "rapyd.INVOICE_PAYMENT_CREATED"
    for n in range(3):
        await broker.default_exchange.publish(aio_pika.Message(b"%d" % n), routing_key=queue)

    assert await queue_depth(broker, queue) == 3
    assert await queue_depth(broker, queue) == 3
    await get_message(broker, queue)
    assert await queue_depth(broker, queue) == 2
