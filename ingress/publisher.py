"""Confirmed publishing to RabbitMQ over a connection the ingress keeps alive in the background.

The ingress starts whether or not the broker is up: `Publisher.start` returns at once and a
background task connects (retrying), declares the topology and opens the publishing channel.
Until then, and whenever the connection or channel is down, `publish` raises BrokerUnavailable
at once (the caller answers 503) instead of waiting. aio-pika's robust connection reconnects by
itself and restores its channels; a watchdog replaces a channel that stays closed anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPChannelError, DeliveryError
from pamqp.commands import Basic
from pamqp.common import FieldValue

from hookpipe import constants as c
from hookpipe import topology, tracing
from hookpipe.broker import BrokerConnectError, connect
from hookpipe.errors import BrokerUnavailable
from hookpipe.ingress.envelope import Envelope
from hookpipe.ingress.spool import Spooled
from hookpipe.settings import Settings

log = structlog.get_logger()

APP_ID: Final = "hookpipe-ingress"
# The first connection, before the robust connection exists, backs off from this up to
# HOOKPIPE_RECONNECT_INTERVAL, the interval of the robust connection's own attempts after.
_FIRST_RETRY: Final = 0.1
# The watchdog looks at the channel this often and replaces one seen closed twice in a row, while
# the connection is up: once could be a robust channel in the middle of restoring itself.
WATCH_INTERVAL: Final = 0.5
_PERSISTENT: Final = 2


class Publisher:
    """One robust connection and one publisher-confirms channel, used by every request."""

    def __init__(
        self, settings: Settings, *, on_state: Callable[[bool], None] | None = None
    ) -> None:
        self._settings = settings
        self._on_state = on_state  # hears the connection come and go (a metrics gauge)
        self._url = settings.amqp_url
        self._reconnect_interval = settings.reconnect_interval
        self._timeout = settings.publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Whether the connection and the publishing channel are open now."""
        connection, channel = self._connection, self._channel
        return (
            connection is not None
            and channel is not None
            and connection.connected.is_set()
            and not channel.is_closed
        )

    @property
    def channel(self) -> AbstractRobustChannel | None:
        """The publishing channel, once opened (for tests and diagnostics)."""
        return self._channel

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingress-broker")

    async def close(self) -> None:
        """Stop the background task and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()

    async def publish(
        self, body: bytes, provider: str, envelope: Envelope, request_id: str, received_at_ms: int
    ) -> None:
        """Publish the raw body and wait for the broker's confirm; BrokerUnavailable if none."""
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to the broker")
        event_id, event_type = envelope
        headers: dict[str, FieldValue] = {
            c.HEADER_RECEIVED_AT: received_at_ms,
            c.HEADER_REQUEST_ID: request_id,
            c.HEADER_ATTEMPT: 0,
            c.HEADER_PROVIDER: provider,
            c.HEADER_EVENT_ID: event_id,
        }
        if tracing.enabled():
            tracing.inject(headers)
        # aiormq's own properties: aio_pika.Message would build the same object, with more work.
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=_PERSISTENT,
            headers=headers,
            message_id=f"{provider}:{event_id}",
            timestamp=datetime.fromtimestamp(received_at_ms // 1000, UTC),
            message_type=event_type,
            app_id=APP_ID,
        )
        try:
            async with asyncio.timeout(self._timeout):
                underlay = await channel.get_underlay_channel()
                # mandatory: with the alternate exchange nothing comes back, but a topology
                # without it must not lose a message silently; the channel raises on a return.
                await underlay.basic_publish(
                    body,
                    # Routed to the archive stream and the handled queue in one step: the
                    # confirm covers both (see hookpipe.topology).
                    exchange=c.ACCEPTED_EXCHANGE,
                    routing_key=f"{provider}.{event_type}",
                    properties=properties,
                    mandatory=True,
                )
        except TimeoutError as exc:
            raise BrokerUnavailable("the broker did not confirm in time") from exc
        except DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the message") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable("lost the connection to the broker") from exc

    async def publish_spooled(self, record: Spooled) -> None:
        """Publish a webhook from the outage spool as it would have been published at once."""
        envelope = Envelope(record.event_id, record.event_type)
        with tracing.resumed(record.traceparent), tracing.span("publish", kind="producer"):
            await self.publish(
                record.body, record.provider, envelope, record.request_id, record.received_at_ms
            )

    async def _run(self) -> None:
        connection = await self._connect()
        self._connection = connection
        await self._declare_topology(connection)
        channel = self._channel = await self._open_channel(connection)
        log.info("broker connected")
        strikes = 0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if connection.connected.is_set() and channel.is_closed:
                strikes += 1
            else:
                strikes = 0
            if strikes >= 2:
                strikes = 0
                log.warning("publishing channel closed; opening a new one")
                dead, channel = channel, await self._open_channel(connection)
                self._channel = channel
                with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                    await dead.close()

    async def _connect(self) -> AbstractRobustConnection:
        delay = _FIRST_RETRY
        while True:
            try:
                return await connect(
                    self._url,
                    "ingress",
                    timeout=self._timeout,
                    reconnect_interval=self._reconnect_interval,
                    on_state=self._on_state,
                )
            except BrokerConnectError as exc:
                # Answering 503 meanwhile; a refused login or vhost needs the operator.
                (log.error if exc.permanent else log.warning)(
                    "broker unreachable; retrying", reason=str(exc), retry_in=delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_interval)

    async def _declare_topology(self, connection: AbstractRobustConnection) -> None:
        while True:
            try:
                channel = await connection.channel()
                try:
                    await topology.declare(channel, self._settings)
                finally:
                    if not channel.is_closed:
                        await channel.close()
                return
            except AMQPChannelError as exc:
                # The broker refused a declaration (other arguments, no permission): publishing
                # may still work against what exists, so say so and go on.
                log.error(
                    "declaring the topology failed", error=type(exc).__name__, detail=str(exc)
                )
                return
            except CONNECTION_EXCEPTIONS as exc:
                log.warning("declaring the topology failed; retrying", error=type(exc).__name__)
                await asyncio.sleep(self._reconnect_interval)

    async def _open_channel(self, connection: AbstractRobustConnection) -> AbstractRobustChannel:
        while True:
            try:
                return await connection.channel(publisher_confirms=True, on_return_raises=True)
            except CONNECTION_EXCEPTIONS as exc:
                log.warning(
                    "opening the publishing channel failed; retrying", error=type(exc).__name__
                )
                await asyncio.sleep(self._reconnect_interval)
