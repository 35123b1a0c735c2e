"""The worker runtime against the real broker, with handlers injected by each test.

The test settings retry after 0.2 s then 0.4 s (jitter 10 %), and give up after 3 attempts.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Literal

import aio_pika
import msgspec
import pytest

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.settings import Settings
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.handlers.base import Delivery
from hookpipe.workers.messages import MalformedMessage, identity_of
from hookpipe.workers.runtime import Worker
from tests.conftest import get_message, queue_depth
from tests.worker_support import header, publish_event, wait_until

Q = "jodo.order.payment.debited"
OTHER_Q = "jodo.direct.payment.cancelled"
Channel = aio_pika.abc.AbstractChannel


class Recorder:
    """A handler that records each delivery and when it came, then does what `behave` says."""

    def __init__(self, behave: Callable[[Delivery], None] | None = None) -> None:
        self.deliveries: list[Delivery] = []
        self.times: list[float] = []
        self.behave = behave

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        self.times.append(time.monotonic())
        if self.behave is not None:
            self.behave(delivery)

    def attempts(self, event_id: str | None = None) -> list[int]:
        return [d.attempt for d in self.deliveries if event_id in (None, d.event_id)]


def fail_until(attempt: int) -> Callable[[Delivery], None]:
    def behave(delivery: Delivery) -> None:
        if delivery.attempt < attempt:
            raise TransientError("the database is restarting")

    return behave


def always(exc: Exception) -> Callable[[Delivery], None]:
    def behave(_: Delivery) -> None:
        raise exc

    return behave


DEAD_LETTERED = "hookpipe_worker_dead_lettered_total"


def sample(worker: Worker, name: str, queue: str = Q, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, {"queue": queue, **labels})
    return value or 0.0


async def test_success_acks_and_gives_the_handler_the_delivery(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}) as worker:
        await publish_event(broker, Q, b'{"k": 1}', event_id="evt-ok")
        await wait_until(lambda: len(handler.deliveries) == 1, what="the handler call")
        await wait_until(lambda: sample(worker, "hookpipe_worker_processed_total") == 1)
        assert worker.in_flight == 0
    # Had it not been acked, closing the connection would have put it back in the queue.
    assert await queue_depth(broker, Q) == 0
    delivery = handler.deliveries[0]
    assert (delivery.queue, delivery.provider, delivery.event_id, delivery.event_type) == (
        Q,
        "jodo",
        "evt-ok",
        "order.payment.debited",
    )
    assert delivery.body == b'{"k": 1}'
    assert delivery.attempt == 1
    assert delivery.received_at_ms is not None
    assert abs(delivery.received_at_ms - time.time() * 1000) < 10_000
    assert sample(worker, "hookpipe_end_to_end_seconds_count") == 1
    assert sample(worker, "hookpipe_worker_handler_seconds_count") == 1


async def test_identity_from_headers_when_message_id_is_missing(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}):
        await publish_event(
            broker,
            Q,
            message_id=None,
            headers={c.HEADER_PROVIDER: "jodo", c.HEADER_EVENT_ID: "from-headers"},
        )
        await wait_until(lambda: len(handler.deliveries) == 1)
    assert handler.deliveries[0].event_id == "from-headers"


async def test_transient_failure_succeeds_on_a_later_attempt_after_the_backoff(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder(fail_until(3))
    async with Worker(test_settings, {Q: handler}) as worker:
        await publish_event(broker, Q, event_id="evt-flaky")
        await wait_until(lambda: sample(worker, "hookpipe_worker_processed_total") == 1)
        assert sample(worker, "hookpipe_worker_retried_total") == 2
    assert handler.attempts() == [1, 2, 3]
    first_gap = handler.times[1] - handler.times[0]
    second_gap = handler.times[2] - handler.times[1]
    jitter = test_settings.retry.jitter
    # The schedule: 0.2 s before the first retry, 0.4 s before the second, give or take jitter.
    assert first_gap >= 0.2 * (1 - jitter) - 0.01
    assert second_gap >= 0.4 * (1 - jitter) - 0.01
    assert first_gap < second_gap
    assert all(d.event_id == "evt-flaky" for d in handler.deliveries)
    assert await queue_depth(broker, topology.dlq_name(Q)) == 0


async def test_always_failing_ends_in_the_dlq_after_max_attempts(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder(always(TransientError("DreamClass answered 503")))
    async with Worker(test_settings, {Q: handler}) as worker:
        await publish_event(broker, Q, b'{"same": "bytes"}', event_id="evt-doomed")
        dead = await get_message(broker, topology.dlq_name(Q), timeout=10)
        assert sample(worker, DEAD_LETTERED, reason="retries_exhausted") == 1
        assert sample(worker, "hookpipe_worker_retried_total") == 2
    assert handler.attempts() == [1, 2, 3]
    assert dead.body == b'{"same": "bytes"}'
    assert dead.message_id == "jodo:evt-doomed"
    assert dead.type == "order.payment.debited"
    headers = dead.headers
    assert headers[c.HEADER_QUEUE] == Q
    assert headers[c.HEADER_ERROR_TYPE] == "TransientError"
    assert headers[c.HEADER_ERROR] == "gave up after 3 attempts: DreamClass answered 503"
    assert headers[c.HEADER_ATTEMPT] == 3
    first, last = headers[c.HEADER_FIRST_FAILURE], headers[c.HEADER_LAST_FAILURE]
    assert isinstance(first, int) and isinstance(last, int)
    # Three failures, 0.2 s and 0.4 s apart (less the jitter).
    assert last - first >= 0.6 * (1 - test_settings.retry.jitter) * 1000 - 10
    assert str(headers[c.HEADER_WORKER]).startswith("worker@")
    assert topology.RETRY_DELAY_HEADER not in headers
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await queue_depth(broker, Q) == 0


async def test_permanent_error_dead_letters_at_once(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder(always(PermanentError("DreamClass answered 404 for the invoice")))
    async with Worker(test_settings, {Q: handler}) as worker:
        await publish_event(broker, Q, event_id="evt-404")
        dead = await get_message(broker, topology.dlq_name(Q))
        assert sample(worker, "hookpipe_worker_retried_total") == 0
    assert handler.attempts() == [1]
    assert dead.headers[c.HEADER_ERROR_TYPE] == "PermanentError"
    assert (
        worker.metrics.registry.get_sample_value(
            "hookpipe_worker_failures_total", {"queue": Q, "error_type": "PermanentError"}
        )
        == 1
    )
    assert header(dead, c.HEADER_ERROR) == "DreamClass answered 404 for the invoice"
    assert dead.headers[c.HEADER_ATTEMPT] == 1
    assert dead.headers[c.HEADER_FIRST_FAILURE] == dead.headers[c.HEADER_LAST_FAILURE]


class Strict(msgspec.Struct):
    amount: int
    status: Literal["paid", "failed"]


_decoder = msgspec.json.Decoder(Strict)


async def decode_strictly(delivery: Delivery) -> None:
    _decoder.decode(delivery.body)


async def test_undecodable_body_dead_letters_at_once(
    broker: Channel, test_settings: Settings
) -> None:
    async with Worker(test_settings, {Q: decode_strictly}) as worker:
        await publish_event(broker, Q, b"{not json", event_id="evt-broken")
        dead = await get_message(broker, topology.dlq_name(Q))
        assert sample(worker, "hookpipe_worker_retried_total") == 0
    assert dead.headers[c.HEADER_ERROR_TYPE] == "DecodeError"
    assert dead.headers[c.HEADER_ATTEMPT] == 1
    assert dead.body == b"{not json"


async def test_validation_error_dead_letters_without_the_rejected_value(
    broker: Channel, test_settings: Settings
) -> None:
    body = b'{"amount": 1, "status": "Ron Rivest"}'
    async with Worker(test_settings, {Q: decode_strictly}):
        await publish_event(broker, Q, body, event_id="evt-invalid")
        dead = await get_message(broker, topology.dlq_name(Q))
    error = header(dead, c.HEADER_ERROR)
    assert dead.headers[c.HEADER_ERROR_TYPE] == "ValidationError"
    assert "$.status" in error
    assert "Ron" not in error


async def test_unexpected_exception_is_retried_and_its_text_withheld(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder(always(KeyError("ron.rivest@example.com")))
    async with Worker(test_settings, {Q: handler}):
        await publish_event(broker, Q, event_id="evt-bug")
        dead = await get_message(broker, topology.dlq_name(Q), timeout=10)
    assert handler.attempts() == [1, 2, 3]
    assert dead.headers[c.HEADER_ERROR_TYPE] == "KeyError"
    assert header(dead, c.HEADER_ERROR) == "gave up after 3 attempts: unexpected KeyError"


async def test_retry_after_picks_the_smallest_delay_queue_that_honours_it(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder(always(TransientError("429 from DreamClass", retry_after=0.3)))
    async with Worker(test_settings, {Q: handler}):
        await publish_event(broker, Q, event_id="evt-429")
        dead = await get_message(broker, topology.dlq_name(Q), timeout=10)
    # The backoff alone would wait 0.2 s first; Retry-After 0.3 s needs the 0.4 s queue, twice.
    x_death = dead.headers["x-death"]
    assert isinstance(x_death, list)
    deaths = {d["queue"]: d["count"] for d in x_death if isinstance(d, dict)}
    assert deaths == {topology.retry_queue_name(400): 2}
    gaps = [later - earlier for earlier, later in itertools.pairwise(handler.times)]
    assert min(gaps) >= 0.4 * (1 - test_settings.retry.jitter) - 0.01


async def test_a_poison_message_does_not_stop_the_messages_behind_it(
    broker: Channel, test_settings: Settings
) -> None:
    def poison(delivery: Delivery) -> None:
        if delivery.event_id == "poison":
            raise TransientError("always fails")

    handler = Recorder(poison)
    # One handler at a time: the good messages can only pass once the poison is out of the way.
    async with Worker(test_settings, {Q: handler}, concurrency=1) as worker:
        await publish_event(broker, Q, event_id="poison")
        for n in range(5):
            await publish_event(broker, Q, event_id=f"good-{n}")
        await wait_until(lambda: sample(worker, "hookpipe_worker_processed_total") == 5)
        # All five went through while the poison waited out its first retry delay.
        assert handler.attempts("poison") == [1]
        dead = await get_message(broker, topology.dlq_name(Q), timeout=10)
    assert dead.message_id == "jodo:poison"
    assert handler.attempts("poison") == [1, 2, 3]


async def test_a_hanging_handler_does_not_stop_the_others(
    broker: Channel, make_settings: Callable[..., Settings]
) -> None:
    hung = asyncio.Event()
    done: list[str] = []

    async def handler(delivery: Delivery) -> None:
        if delivery.event_id == "hangs":
            hung.set()
            await asyncio.Event().wait()
        done.append(delivery.event_id)

    settings = make_settings(shutdown_grace=0.2)
    async with Worker(settings, {Q: handler}, concurrency=2) as worker:
        await publish_event(broker, Q, event_id="hangs")
        await wait_until(hung.is_set)
        for n in range(4):
            await publish_event(broker, Q, event_id=f"next-{n}")
        await wait_until(lambda: len(done) == 4, what="the messages behind the hanging one")
        # Their acks go out at the end of the event loop's turn, and their tasks end with them.
        await wait_until(lambda: worker.in_flight == 1, what="only the hanging one in flight")
    # Cut off at shutdown, it went back to its queue: not acked, not dead-lettered.
    requeued = await get_message(broker, Q)
    assert requeued.message_id == "jodo:hangs"
    assert await queue_depth(broker, topology.dlq_name(Q)) == 0


async def test_a_provider_whose_handlers_all_hang_holds_only_its_own_slots(
    broker: Channel, make_settings: Callable[..., Settings]
) -> None:
    # DreamClass's API hangs: every slot of its bulkhead is held. Jodo's events still go through.
    dreamclass_queue = "dreamclass.PAYMENT_CREATED"
    hanging = 0
    done: list[str] = []

    async def hangs(delivery: Delivery) -> None:
        nonlocal hanging
        hanging += 1
        await asyncio.Event().wait()

    async def quick(delivery: Delivery) -> None:
        done.append(delivery.event_id)

    settings = make_settings(shutdown_grace=0.2)
    async with Worker(settings, {dreamclass_queue: hangs, Q: quick}, concurrency=3):
        for n in range(6):
            await publish_event(broker, dreamclass_queue, event_id=f"dc-{n}")
        await wait_until(lambda: hanging == 3, what="the DreamClass slots all held")
        for n in range(10):
            await publish_event(broker, Q, event_id=f"jodo-{n}")
        await wait_until(lambda: len(done) == 10, what="Jodo's events beside the hanging ones")
        assert hanging == 3  # its own bulkhead bounds it


async def test_concurrency_bounds_the_handlers_running_at_once(
    broker: Channel, test_settings: Settings
) -> None:
    running = 0
    peak = 0
    finished = 0

    async def handler(_: Delivery) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        finished += 1

    # Two queues: prefetch is per consumer, the bound is the worker's.
    async with Worker(test_settings, {Q: handler, OTHER_Q: handler}, concurrency=3):
        for n in range(8):
            await publish_event(broker, Q, event_id=f"a-{n}")
            await publish_event(broker, OTHER_Q, event_id=f"b-{n}")
        await wait_until(lambda: finished == 16)
    assert peak == 3


async def test_message_without_an_identity_is_dead_lettered(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}) as worker:
        # aiormq gives a message without message_id a random one: no provider, no event id.
        await publish_event(broker, Q, message_id=None)
        dead = await get_message(broker, topology.dlq_name(Q))
        await wait_until(lambda: sample(worker, DEAD_LETTERED, reason="malformed") == 1)
        await publish_event(broker, Q, event_id="fine")
        await wait_until(lambda: len(handler.deliveries) == 1, what="the next message")
    assert dead.headers[c.HEADER_ERROR_TYPE] == "MalformedMessage"
    assert "not provider:event_id" in header(dead, c.HEADER_ERROR)
    assert dead.headers[c.HEADER_ATTEMPT] == 1
    assert handler.deliveries[0].event_id == "fine"


def test_identity_comes_from_message_id_or_else_the_headers() -> None:
    headers = {c.HEADER_PROVIDER: "rapyd", c.HEADER_EVENT_ID: "wh_2"}
    assert identity_of("jodo:a:b", {}) == ("jodo", "a:b")
    assert identity_of("not-an-id", headers) == ("rapyd", "wh_2")
    assert identity_of(None, {c.HEADER_PROVIDER: b"rapyd", c.HEADER_EVENT_ID: b"wh_3"}) == (
        "rapyd",
        "wh_3",
    )
    with pytest.raises(MalformedMessage, match="no message_id"):
        identity_of(None, {})
    with pytest.raises(MalformedMessage, match="not provider:event_id"):
        identity_of(":x", {c.HEADER_PROVIDER: "jodo"})


async def test_message_without_type_is_dead_lettered(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}):
        await publish_event(broker, Q, event_type=None)
        dead = await get_message(broker, topology.dlq_name(Q))
    assert dead.headers[c.HEADER_ERROR_TYPE] == "MalformedMessage"
    assert "no type" in header(dead, c.HEADER_ERROR)
    assert handler.deliveries == []


async def test_message_of_another_provider_is_dead_lettered(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}):
        await publish_event(broker, Q, message_id="rapyd:wh_1")
        dead = await get_message(broker, topology.dlq_name(Q))
        await publish_event(broker, Q, message_id="no-colon-here")
        malformed = await get_message(broker, topology.dlq_name(Q))
    assert "provider rapyd" in header(dead, c.HEADER_ERROR)
    assert "not provider:event_id" in header(malformed, c.HEADER_ERROR)
    assert handler.deliveries == []


async def test_failed_dead_letter_publish_requeues_the_message(
    broker: Channel, test_settings: Settings
) -> None:
    dlx = await broker.get_exchange(c.DEAD_LETTER_EXCHANGE, ensure=False)
    dlq = await broker.get_queue(topology.dlq_name(Q))
    calls = 0

    async def handler(_: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await dlq.bind(dlx, topology.dlq_name(Q))
        raise PermanentError("no such invoice")

    try:
        async with Worker(test_settings, {Q: handler}) as worker:
            # Without its binding (after the worker declared it) the dead letter is unroutable,
            # so its publish is refused.
            await dlq.unbind(dlx, topology.dlq_name(Q))
            await publish_event(broker, Q, event_id="evt-unroutable")
            dead = await get_message(broker, topology.dlq_name(Q))
            assert sample(worker, DEAD_LETTERED, reason="permanent") == 1
    finally:
        await dlq.bind(dlx, topology.dlq_name(Q))
    # The first dead-lettering failed and the message came back rather than being acked.
    assert calls == 2
    assert dead.message_id == "jodo:evt-unroutable"


async def test_stop_lets_handlers_in_flight_finish_and_requeues_what_did_not_start(
    broker: Channel, test_settings: Settings
) -> None:
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def handler(delivery: Delivery) -> None:
        started.append(delivery.event_id)
        await release.wait()
        finished.append(delivery.event_id)

    worker = Worker(test_settings, {Q: handler}, concurrency=2)
    await worker.start()
    try:
        for n in range(2):
            await publish_event(broker, Q, event_id=f"first-{n}")
        await wait_until(lambda: len(started) == 2)
        stopping = asyncio.create_task(worker.stop())
        # The consumer is cancelled at once: what is published now stays in the queue.
        await publish_event(broker, Q, event_id="late")
        await asyncio.sleep(0)
        release.set()
        await stopping
    finally:
        await worker.stop()
    assert sorted(finished) == ["first-0", "first-1"]
    late = await get_message(broker, Q)
    assert late.message_id == "jodo:late"
    assert not late.redelivered
    assert await queue_depth(broker, Q) == 0


async def test_handler_still_running_after_the_grace_is_cancelled_and_requeued(
    broker: Channel, make_settings: Callable[..., Settings]
) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def handler(_: Delivery) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    settings = make_settings(shutdown_grace=0.3)
    worker = Worker(settings, {Q: handler})
    await worker.start()
    await publish_event(broker, Q, event_id="evt-slow")
    await wait_until(started.is_set)
    began = time.monotonic()
    await worker.stop()
    assert 0.3 <= time.monotonic() - began < 3
    assert cancelled.is_set()
    requeued = await get_message(broker, Q)
    assert requeued.message_id == "jodo:evt-slow"
    assert requeued.redelivered
    assert await queue_depth(broker, topology.dlq_name(Q)) == 0


async def test_worker_consumes_only_its_own_queues(
    broker: Channel, test_settings: Settings
) -> None:
    handler = Recorder()
    async with Worker(test_settings, {Q: handler}):
        await publish_event(broker, OTHER_Q, event_id="not-mine")
        await publish_event(broker, Q, event_id="mine")
        await wait_until(lambda: len(handler.deliveries) == 1)
    not_mine = await get_message(broker, OTHER_Q)
    assert not_mine.message_id == "jodo:not-mine"
    assert [d.event_id for d in handler.deliveries] == ["mine"]
