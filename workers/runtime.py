"""The worker runtime: consume the handled queues, run each message's handler, settle it.

Settling follows `workers.outcome`: ack a success; for a failure, first publish a copy to the
delayed-retry exchange or to the dead-letter exchange, wait for the broker's confirm, and only
then ack the original. A message is never acked before its copy is safe, and never acked
unfinished: when the copy cannot be published, or a handler is cut off at shutdown, the
original goes back to its queue (whose x-delivery-limit stops a message that keeps crashing).
Acks go out together where they can (`workers.acks`), always once the handler has returned,
so after its ledger commit.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import traceback
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
    ConsumerTag,
)
from aio_pika.exceptions import ChannelInvalidStateError

from hookpipe import constants as c
from hookpipe import topology, tracing
from hookpipe.broker import connect, connection_name
from hookpipe.logs import logged_with
from hookpipe.settings import Settings
from hookpipe.workers.acks import ChannelAcks
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.messages import (
    MalformedMessage,
    copy_for_republish,
    identity_of,
    int_header,
    now_ms,
    text_header,
)
from hookpipe.workers.metrics import WorkerMetrics
from hookpipe.workers.outcome import Action, Outcome, outcome_of

log = structlog.get_logger()


def delivery_from(message: AbstractIncomingMessage, queue: str) -> Delivery:
    """What a handler is given, read from the message; MalformedMessage if it cannot be."""
    headers = message.headers or {}
    provider, event_id = identity_of(message.message_id, headers)
    # The queue decides which handler runs and the ledger keys payments by provider, so a
    # message of another provider in this queue would be applied as if it were this one's.
    queue_provider = queue.partition(".")[0]
    if provider != queue_provider:
        raise MalformedMessage(f"a message of provider {provider} in queue {queue}")
    event_type = message.type
    if not event_type:
        raise MalformedMessage("the message has no type (the event type)")
    return Delivery(
        queue=queue,
        provider=provider,
        event_id=event_id,
        event_type=event_type,
        body=message.body,
        received_at_ms=int_header(headers, c.HEADER_RECEIVED_AT),
        attempt=attempt_of(message),
    )


def attempt_of(message: AbstractIncomingMessage) -> int:
    """This delivery's attempt number: deliveries so far to a handler (a header), plus this one."""
    done = int_header(message.headers or {}, c.HEADER_ATTEMPT)
    return max(done or 0, 0) + 1


def _where(exc: BaseException) -> str:
    """file:line where an unexpected exception was raised: enough to find the bug, no data."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno}"


class Worker:
    """Consumes handled queues with up to `concurrency` handlers at once per provider;
    `stop()` drains."""

    def __init__(
        self,
        settings: Settings,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one queue to consume")
        self.settings = settings
        self.handlers = dict(handlers)
        self.concurrency = concurrency or settings.worker_concurrency
        self.metrics = metrics or WorkerMetrics()
        self.name = f"{connection_name('worker')}[{os.getpid()}]"
        # prefetch is per consumer on quorum queues (they refuse a channel-wide one), so a
        # worker holds up to concurrency messages per queue. The handlers running are bounded
        # per provider, a bulkhead each: a provider whose dependency hangs (the DreamClass API)
        # holds its own slots only, and the other providers' events go on.
        bulkheads = {
            provider: asyncio.Semaphore(self.concurrency)
            for provider in {queue.partition(".")[0] for queue in self.handlers}
        }
        # Looked up per message by queue: the provider's semaphore, found once here.
        self._slots = {queue: bulkheads[queue.partition(".")[0]] for queue in self.handlers}
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[None]] = set()
        self._consumers: list[tuple[AbstractQueue, ConsumerTag]] = []
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._retry_exchange: AbstractExchange | None = None
        self._dead_letter_exchange: AbstractExchange | None = None
        # Per channel (a robust channel is a new one after each reconnect): delivery tags are.
        self._acks: dict[object, ChannelAcks] = {}
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(self.handlers)

    @property
    def consuming(self) -> bool:
        """Whether the broker connection is open and every queue has its consumer (a robust
        connection restores them after a reconnect): the worker's readiness."""
        connection, channel = self._connection, self._channel
        return (
            not self._stopping
            and connection is not None
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
            and len(self._consumers) == len(self.handlers)
        )

    @property
    def in_flight(self) -> int:
        """Messages received and not yet settled."""
        return len(self._tasks)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, declare the topology, and start consuming every queue of `handlers`."""
        self._connection = await connect(
            self.settings.amqp_url,
            "worker",
            reconnect_interval=self.settings.reconnect_interval,
            on_state=self.metrics.broker_connected.set,
        )
        try:
            # on_return_raises: an unroutable retry or dead letter must fail its publish (and
            # the original be requeued), not be confirmed and silently dropped.
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            assert isinstance(channel, AbstractRobustChannel)
            self._channel = channel
            await channel.set_qos(prefetch_count=self.concurrency)
            await topology.declare(channel, self.settings)
            self._retry_exchange = await channel.get_exchange(c.RETRY_PREFIX, ensure=False)
            self._dead_letter_exchange = await channel.get_exchange(
                c.DEAD_LETTER_EXCHANGE, ensure=False
            )
            for name in self.handlers:
                queue = await channel.get_queue(name)
                tag = await queue.consume(partial(self._on_message, name))
                self._consumers.append((queue, tag))
        except BaseException:
            await self._connection.close()
            raise

    async def stop(self) -> None:
        """Stop consuming, let handlers in flight finish within the grace, requeue the rest."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            for queue, tag in self._consumers:
                try:
                    await queue.cancel(tag)
                except Exception as exc:  # the connection may be down; closing settles it
                    log.warning(
                        "cancelling a consumer failed",
                        queue=queue.name,
                        error_type=type(exc).__name__,
                    )
            # Messages not yet started go back now, so another worker takes them at once.
            for task in self._waiting:
                task.cancel()
            pending = set(self._tasks)
            if pending:
                log.info("draining", in_flight=len(pending), grace_s=self.settings.shutdown_grace)
                _, pending = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
            if pending:
                log.warning("grace period over, requeueing unfinished messages", count=len(pending))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            for acks in self._acks.values():
                await acks.drain()
            if self._connection is not None:
                await self._connection.close()
        finally:
            self._stopped.set()

    async def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        # aio-pika runs this callback in a task of the channel's; the work goes into a task of
        # our own, which stop() can wait for and cancel.
        acks = self._channel_acks(message)
        acks.received(message)
        task = asyncio.create_task(self._process(queue, message, acks))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(
        self, queue: str, message: AbstractIncomingMessage, acks: ChannelAcks
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopping:
            # Delivered between basic.cancel and its reply: straight back to the queue.
            await self._requeue(message, acks)
            return
        slots = self._slots[queue]
        try:
            self._waiting.add(task)
            try:
                await slots.acquire()
            finally:
                self._waiting.discard(task)
            try:
                await self._handle(queue, message, acks)
            finally:
                slots.release()
        except asyncio.CancelledError:
            # Shutdown: the message was not finished, so it must not be acked. One whose ack
            # was decided already is acked still.
            if acks.in_flight(message):
                await self._requeue(message, acks)
            raise

    async def _handle(
        self, queue: str, message: AbstractIncomingMessage, acks: ChannelAcks
    ) -> None:
        # The id the ingress gave the webhook's request: its log lines and these share it.
        request_id = text_header(message.headers or {}, c.HEADER_REQUEST_ID)
        try:
            delivery = delivery_from(message, queue)
        except MalformedMessage as exc:
            attempt = attempt_of(message)
            outcome = outcome_of(exc, attempt, self.settings.retry)
            with logged_with(queue=queue, attempt=attempt, request_id=request_id):
                await self._settle(queue, message, acks, attempt, outcome)
            return
        with (
            logged_with(
                request_id=request_id,
                provider=delivery.provider,
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                queue=queue,
                attempt=delivery.attempt,
            ),
            # The ingress's trace goes on here, through the message's traceparent header.
            tracing.span(f"handle {queue}", kind="consumer", parent=message.headers) as span,
        ):
            if span is not None:
                span.set_attribute("hookpipe.attempt", delivery.attempt)
            started = time.perf_counter()
            error: Exception | None = None
            try:
                await self.handlers[queue](delivery)
            except Exception as exc:
                error = exc
            elapsed = time.perf_counter() - started
            series = self.metrics.of_queue(queue)
            series.handler_seconds.observe(elapsed)
            self.metrics.process_handled.inc()
            outcome = outcome_of(error, delivery.attempt, self.settings.retry)
            if outcome.unexpected and error is not None:
                log.warning(
                    "unexpected error in handler",
                    error_type=type(error).__name__,
                    where=_where(error),
                )
            if outcome.action is Action.ACK:
                if delivery.received_at_ms is not None:
                    latency = (now_ms() - delivery.received_at_ms) / 1000
                    series.end_to_end_seconds.observe(max(latency, 0.0))
                # Debug: the ledger records every event applied; a line each costs throughput.
                log.debug("event handled", duration_ms=round(elapsed * 1000, 2))
            await self._settle(queue, message, acks, delivery.attempt, outcome)

    async def _settle(
        self,
        queue: str,
        message: AbstractIncomingMessage,
        acks: ChannelAcks,
        attempt: int,
        outcome: Outcome,
    ) -> None:
        if outcome.action is Action.ACK:
            await acks.ack(message)
            self.metrics.of_queue(queue).processed.inc()
            return
        self.metrics.failures.labels(queue, outcome.error_type).inc()
        headers = self._failure_headers(message, queue, attempt, outcome)
        try:
            if outcome.action is Action.RETRY:
                await self._publish_retry(message, queue, headers, outcome.delay_ms)
            else:
                await self._publish_dead_letter(message, queue, headers)
        except Exception as exc:
            log.error(
                "could not publish the failed message, requeueing it",
                action=outcome.action.value,
                error_type=type(exc).__name__,
            )
            await self._requeue(message, acks)
            return
        await acks.ack(message)
        if outcome.action is Action.RETRY:
            self.metrics.retried.labels(queue).inc()
            log.warning(
                "handler failed, retrying later",
                error_type=outcome.error_type,
                error=outcome.error,
                delay_ms=outcome.delay_ms,
            )
        else:
            self.metrics.dead_lettered.labels(queue, str(outcome.reason)).inc()
            log.error(
                "dead-lettered",
                error_type=outcome.error_type,
                error=outcome.error,
                dlq=topology.dlq_name(queue),
            )

    def _failure_headers(
        self, message: AbstractIncomingMessage, queue: str, attempt: int, outcome: Outcome
    ) -> dict[str, Any]:
        now = now_ms()
        headers: dict[str, Any] = dict(message.headers or {})
        headers.pop(topology.RETRY_DELAY_HEADER, None)
        headers[c.HEADER_ATTEMPT] = attempt
        if int_header(headers, c.HEADER_FIRST_FAILURE) is None:
            headers[c.HEADER_FIRST_FAILURE] = now
        headers[c.HEADER_LAST_FAILURE] = now
        headers[c.HEADER_QUEUE] = queue
        headers[c.HEADER_ERROR_TYPE] = outcome.error_type
        headers[c.HEADER_ERROR] = outcome.error
        headers[c.HEADER_WORKER] = self.name
        return headers

    async def _publish_retry(
        self, message: AbstractIncomingMessage, queue: str, headers: dict[str, Any], delay_ms: int
    ) -> None:
        assert self._retry_exchange is not None
        # The delay queue's TTL is delay x (1 + jitter): the jittered expiration never exceeds it.
        jitter = self.settings.retry.jitter
        expiration_ms = min(
            round(delay_ms * (1 + random.uniform(-jitter, jitter))),
            round(delay_ms * (1 + jitter)),
        )
        headers[topology.RETRY_DELAY_HEADER] = str(delay_ms)
        # Routed by the origin queue's name: when the delay expires, the requeue exchange
        # takes the message back to that queue, and to no other.
        await self._retry_exchange.publish(
            copy_for_republish(message, headers, timedelta(milliseconds=max(expiration_ms, 0))),
            routing_key=queue,
            mandatory=True,
            timeout=self.settings.publish_timeout,
        )

    async def _publish_dead_letter(
        self, message: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
    ) -> None:
        assert self._dead_letter_exchange is not None
        await self._dead_letter_exchange.publish(
            copy_for_republish(message, headers),
            routing_key=topology.dlq_name(queue),
            mandatory=True,
            timeout=self.settings.publish_timeout,
        )

    def _channel_acks(self, message: AbstractIncomingMessage) -> ChannelAcks:
        """The acks of the channel the message came on."""
        try:
            channel = message.channel
        except ChannelInvalidStateError:
            # Closed already: an ack cannot reach the broker, which requeues the message.
            return ChannelAcks()
        acks = self._acks.get(channel)
        if acks is None:
            # A new channel (the first, or one reopened after a reconnect): the acks of the
            # closed ones have been sent or failed by now.
            for old in [key for key, value in self._acks.items() if _closed(key)]:
                self._acks.pop(old)
            acks = self._acks[channel] = ChannelAcks()
        return acks

    async def _requeue(self, message: AbstractIncomingMessage, acks: ChannelAcks) -> None:
        try:
            await message.nack(requeue=True)
        except Exception as exc:
            # The channel is gone: the broker requeues what it had not seen acked anyway.
            log.warning("nack failed; the broker will redeliver", error_type=type(exc).__name__)
        acks.requeued(message)


def _closed(channel: object) -> bool:
    return bool(getattr(channel, "is_closed", True))
