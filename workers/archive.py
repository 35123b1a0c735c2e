"""Reading the archive stream (hookpipe.archive): every accepted webhook, as published, by time.

The stream is read over AMQP 0-9-1, as any RabbitMQ 3.9+ serves it without the stream plugin:
a consumer with a prefetch and the `x-stream-offset` argument, acknowledging what it read (an
acknowledgement on a stream removes nothing; it only grants credit for more).

A window (`--since`, `--until`) is found without reading what lies before it, and the read stops
after it:

- Start: the broker seeks a timestamp offset to the first chunk it appended at or after that
  time, by its own clock and to the second (AMQP timestamps are whole seconds). A webhook is
  appended after the ingress read it, so every webhook received at or after `since` lies at or
  after the chunk of `since` minus CLOCK_SKEW (the ingress's and the broker's clocks may differ
  that much), second rounded down. What that chunk holds from before `since` is read and
  skipped by the webhook's own receipt time (x-hookpipe-received-at, in ms).
- End: the ingress waits at most HOOKPIPE_PUBLISH_TIMEOUT for a confirm, so a webhook is
  appended within that time of its receipt (or it was answered 503 and the provider sends it
  again). Once a webhook received later than `until` + that timeout + CLOCK_SKEW is read, every
  later one was appended after the window's last could have been: the read stops there.
- And at the newest webhook the stream held when the read began (its offset is asked for
  first), so that a read without `until` ends instead of waiting for new webhooks.

A webhook that waited in an ingress's outage spool is appended when the broker is back, possibly
long after its receipt: a window read that stopped before it misses it. Such a webhook is found
by a window over when it was published, or without `--until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from hookpipe import constants as c
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers.dlq_letter import aware
from hookpipe.workers.dlq_session import connect
from hookpipe.workers.errors import WorkerError
from hookpipe.workers.messages import identity_if_any, int_header, text_header

# How far the ingress's clock may be ahead of the broker's, as far as a window read cares.
CLOCK_SKEW: Final = timedelta(seconds=1)
# Messages the broker may send before an acknowledgement: a stream is read in whole chunks, and
# a larger credit keeps a chunk's worth on the way (memory stays bounded by it).
PREFETCH: Final = 1000
# Acknowledge in batches (`multiple`): one frame per ACK_EVERY messages instead of one each.
ACK_EVERY: Final = 200
# How long the first message may take once a read began; none by then means the seek landed
# after the newest chunk (the broker then waits for new ones, which a read does not).
FIRST_DELIVERY_WAIT_S: Final = 2.0
# Once the newest chunk's first message is in, the rest of that chunk comes in the same burst.
TAIL_GAP_S: Final = 0.2
# How long the broker may send nothing in the middle of a read before it counts as failed.
STALL_S: Final = 15.0
# Set by the broker on every message it delivers from a stream; not a header the ingress sent.
OFFSET_HEADER: Final = "x-stream-offset"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """A time in ms since the epoch, exactly (no float on the way), rounded down."""
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


class ArchiveError(WorkerError):
    """The archive cannot be read (missing, or the broker stopped sending)."""


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One webhook as the ingress published it, and where it lies in the archive."""

    offset: int
    message_id: str | None
    provider: str | None
    event_id: str | None
    event_type: str | None
    routing_key: str
    received_at_ms: int | None  # x-hookpipe-received-at: when the ingress read it
    request_id: str | None
    timestamp: datetime | None
    content_type: str | None
    app_id: str | None
    headers: Mapping[str, Any]  # as published: the broker's offset header is left out
    body: bytes

    @property
    def queue(self) -> str | None:
        """The handled queue it was routed to; None if none (it went to hookpipe.unrouted)."""
        return self.routing_key if self.routing_key in handled_queues() else None

    @property
    def received_at(self) -> datetime | None:
        return None if self.received_at_ms is None else from_ms(self.received_at_ms)

    @property
    def when_ms(self) -> int | None:
        """When the ingress received it, or else the message's timestamp (whole seconds)."""
        if self.received_at_ms is not None:
            return self.received_at_ms
        return None if self.timestamp is None else to_ms(self.timestamp)


def read_event(message: AbstractIncomingMessage) -> ArchivedEvent:
    """An archive message as an ArchivedEvent; never raises on odd headers."""
    headers = dict(message.headers or {})
    offset = headers.pop(OFFSET_HEADER, None)
    provider, event_id = identity_if_any(message.message_id, headers)
    return ArchivedEvent(
        offset=offset if isinstance(offset, int) else -1,
        message_id=message.message_id,
        provider=provider,
        event_id=event_id,
        event_type=message.type,
        routing_key=message.routing_key or "",
        received_at_ms=int_header(headers, c.HEADER_RECEIVED_AT),
        request_id=text_header(headers, c.HEADER_REQUEST_ID),
        timestamp=aware(message.timestamp),
        content_type=message.content_type,
        app_id=message.app_id,
        headers=headers,
        body=message.body,
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """Which archived webhooks a command works on; `since` inclusive, `until` exclusive."""

    provider: str | None = None
    event_type: str | None = None  # as the provider writes it, or with the provider
    event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, event: ArchivedEvent) -> bool:
        if self.provider is not None and event.provider != self.provider:
            return False
        if self.event_type is not None and self.event_type not in (
            event.event_type,
            f"{event.provider}.{event.event_type}",
        ):
            return False
        if self.event_id is not None and event.event_id != self.event_id:
            return False
        if self.since is not None or self.until is not None:
            when = event.when_ms
            if when is None:
                return False
            if self.since is not None and when < to_ms(self.since):
                return False
            if self.until is not None and when >= to_ms(self.until):
                return False
        return True


@dataclass(slots=True)
class ReadStats:
    """What a read did: how many archived webhooks it read, and where in the stream."""

    read: int = 0
    matched: int = 0
    seek: str = ""
    first_offset: int | None = None
    last_offset: int | None = None
    tail: int | None = None  # the newest offset when the read began; None: the archive was empty
    stopped_by: str = ""  # "until", "tail", "end-offset", "nothing-after-seek", "stop", "caller"
    errors: list[str] = field(default_factory=list)

    def fraction(self) -> float:
        """How far through what it will read (by offset), 0 to 1."""
        if self.tail is None or self.first_offset is None or self.last_offset is None:
            return 0.0
        span = self.tail - self.first_offset
        return 1.0 if span <= 0 else (self.last_offset - self.first_offset) / span


def seek_argument(selection: Selection) -> datetime | str:
    """The x-stream-offset a read of `selection` starts at: a timestamp, or "first"."""
    if selection.since is None:
        return "first"
    moment = selection.since - CLOCK_SKEW
    # Whole seconds, rounded down: an AMQP timestamp has no fraction.
    return datetime.fromtimestamp(math.floor(moment.timestamp()), UTC)


async def read(
    settings: Settings,
    selection: Selection,
    *,
    stats: ReadStats | None = None,
    stop: asyncio.Event | None = None,
    from_offset: int | None = None,
    to_offset: int | None = None,
) -> AsyncGenerator[ArchivedEvent, None]:
    """The archived webhooks `selection` matches, oldest first, reading only about its window.

    `from_offset` / `to_offset` bound the read by offset instead (inclusive), to read again what
    an earlier read covered. Setting `stop` ends it after the message in hand. Use it with
    `contextlib.aclosing` when the caller may stop early: closing ends the consumer.
    """
    stats = stats if stats is not None else ReadStats()
    stop = stop or asyncio.Event()
    end_bound = timedelta(seconds=settings.publish_timeout) + CLOCK_SKEW
    stop_at_ms = None if selection.until is None else to_ms(selection.until + end_bound)
    connection = await connect(settings, "events")
    try:
        tail = await _newest(connection, stats)
        if tail is None:
            stats.stopped_by = "empty"
            return
        offset, newest_at = tail
        stats.tail = offset
        if to_offset is not None:
            stats.tail = min(offset, to_offset)
        if (
            from_offset is None
            and selection.since is not None
            and newest_at is not None
            and from_ms(newest_at) + end_bound < selection.since
        ):
            # Even the newest webhook was received long before the window: nothing to read.
            stats.stopped_by = "nothing-after-seek"
            return
        start: datetime | str | int = from_offset if from_offset is not None else "first"
        if from_offset is None:
            start = seek_argument(selection)
        stats.seek = start.isoformat() if isinstance(start, datetime) else str(start)
        channel = await _stream_channel(connection)
        deliveries: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        queue = await channel.get_queue(c.ARCHIVE_STREAM, ensure=False)

        async def deliver(message: AbstractIncomingMessage) -> None:
            deliveries.put_nowait(message)

        await _consume(queue, deliver, start)
        unacked: AbstractIncomingMessage | None = None
        since_ack = 0
        try:
            while True:
                if stop.is_set():
                    stats.stopped_by = "stop"
                    return
                message = await _next(deliveries, stats, stop)
                if message is None:
                    return
                unacked, since_ack = message, since_ack + 1
                if since_ack >= ACK_EVERY:
                    await message.ack(multiple=True)
                    unacked, since_ack = None, 0
                event = read_event(message)
                if to_offset is not None and event.offset > to_offset:
                    stats.stopped_by = "end-offset"
                    return
                stats.read += 1
                if stats.first_offset is None:
                    stats.first_offset = event.offset
                stats.last_offset = event.offset
                when = event.when_ms
                if stop_at_ms is not None and when is not None and when >= stop_at_ms:
                    stats.stopped_by = "until"
                    return
                if selection.matches(event):
                    stats.matched += 1
                    yield event
                if stats.tail is not None and event.offset >= stats.tail:
                    stats.stopped_by = "tail"
                    return
        finally:
            if unacked is not None and not channel.is_closed:
                with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                    await unacked.ack(multiple=True)
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await connection.close()


async def _stream_channel(connection: Any) -> AbstractChannel:
    channel: AbstractChannel = await connection.channel()
    # A stream refuses a consumer without a prefetch.
    await channel.set_qos(prefetch_count=PREFETCH)
    return channel


async def _consume(queue: AbstractQueue, deliver: Any, start: datetime | str | int) -> None:
    try:
        await queue.consume(deliver, arguments={"x-stream-offset": start})
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ArchiveError(
            f"{c.ARCHIVE_STREAM} does not exist in this vhost: run 'hookpipe topology declare'"
        ) from None


async def _next(
    deliveries: asyncio.Queue[AbstractIncomingMessage], stats: ReadStats, stop: asyncio.Event
) -> AbstractIncomingMessage | None:
    """The next delivery; None when the read is over (nothing came after the seek)."""
    with contextlib.suppress(asyncio.QueueEmpty):
        return deliveries.get_nowait()
    wait = FIRST_DELIVERY_WAIT_S if stats.read == 0 else STALL_S
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not stop.is_set():
        try:
            return await asyncio.wait_for(deliveries.get(), min(0.2, wait))
        except TimeoutError:
            if loop.time() < deadline:
                continue
        if stats.read == 0:
            stats.stopped_by = "nothing-after-seek"
            return None
        raise ArchiveError(
            f"the broker sent nothing from {c.ARCHIVE_STREAM} for {STALL_S:g} s "
            f"after offset {stats.last_offset}"
        )
    stats.stopped_by = "stop"
    return None


async def _newest(connection: Any, stats: ReadStats) -> tuple[int, int | None] | None:
    """(offset, receipt time) of the newest archived webhook; None if the archive is empty.

    A consumer at "last" gets the newest chunk, whole: its last message is the newest webhook.
    """
    channel = await _stream_channel(connection)
    deliveries: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    queue = await channel.get_queue(c.ARCHIVE_STREAM, ensure=False)

    async def deliver(message: AbstractIncomingMessage) -> None:
        deliveries.put_nowait(message)

    try:
        await _consume(queue, deliver, "last")
        newest: AbstractIncomingMessage | None = None
        wait = FIRST_DELIVERY_WAIT_S
        while True:
            try:
                newest = await asyncio.wait_for(deliveries.get(), wait)
            except TimeoutError:
                break
            wait = TAIL_GAP_S
        if newest is None:
            return None
        event = read_event(newest)
        return event.offset, event.when_ms
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await channel.close()


def window_text(selection: Selection) -> str:
    """The window for people: 'since 2026-12-03 10:00:00 UTC until ...'."""

    def at(moment: datetime) -> str:
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"

    parts = []
    if selection.since is not None:
        parts.append(f"since {at(selection.since)}")
    if selection.until is not None:
        parts.append(f"until {at(selection.until)}")
    return " ".join(parts) or "the whole archive"


def one_event(provider: str, event_id: str, received_at_ms: int | None) -> Selection:
    """The selection of one event; within a millisecond of its receipt when that is known."""
    if received_at_ms is None:
        return Selection(provider=provider, event_id=event_id)
    at = from_ms(received_at_ms)
    return Selection(provider=provider, event_id=event_id, since=at, until=at + _MS)
