"""Dead-letter operations (spec §6): list, show, replay and purge the DLQ of a handled queue.

AMQP has no way to browse a queue, so every operation takes the messages it reads (basic.get,
unacknowledged) and gives back those it does not remove. Giving back without losing or
reordering anything depends on how the broker requeues, and RabbitMQ has done it two ways:

- A quorum queue with a delivery limit, and every quorum queue from RabbitMQ 4.0 on, puts a
  requeued message back at the head, in the order the requeues arrive.
- Before 4.0, a quorum queue without a delivery limit (our DLQs) puts it at the back.

So an operation takes every message the DLQ held when it started, in order, holds what it keeps
until the end and then gives it all back in that order: the head case restores the order as it
was, the back case too (the queue holds nothing else by then). A message dead-lettered while an
operation runs may end up ahead of the kept ones on a pre-4.0 broker; nothing is ever lost.

Two details keep the order exact. Giving back goes in chunks of RETURN_CHUNK (one basic.nack
each, `multiple`), and waits for a chunk to be back before sending the next: the broker
reorders a larger batch, and more requeues in flight than its command soft limit. And
basic.nack, not basic.reject: from RabbitMQ 4.3 on only reject counts as a failed delivery
toward a delivery limit, and before it both did; a DLQ has no limit of its own before 4.0, but
4.0-4.2 give every quorum queue a default limit of 20 (see the report in the module's tests).

Only one operation at a time works on a DLQ: each holds an exclusive queue named after it,
which the broker deletes when the connection ends, however it ends.

Replay publishes each message to the requeue exchange, routed by its origin queue's name, with
a publisher confirm, and acknowledges it from the DLQ only once confirmed. A crash between the
two leaves the message in both queues; the ledger records each processed event, so its second
run changes nothing. The reverse, acknowledged but not published, cannot happen.

An operation cut short (Ctrl-C, a publish not confirmed) gives back at once what it holds; on a
pre-4.0 broker those messages go behind the ones it had not reached yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from hookpipe import constants as c
from hookpipe import personal, topology, values
from hookpipe.broker import connection_name
from hookpipe.errors import BrokerUnavailable
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers.errors import WorkerError
from hookpipe.workers.messages import (
    MalformedMessage,
    copy_for_republish,
    identity_of,
    int_header,
    now_ms,
    text_header,
)
from hookpipe.workers.outcome import MAX_ERROR_CHARS

# Requeues sent as one basic.nack: the broker returns up to 32 in order (more come back
# shuffled), and keeps order across commands only while fewer than 32 are in flight.
RETURN_CHUNK: Final = 32
# How long to wait for a chunk of requeues to show in the queue before sending the next anyway.
RETURN_WAIT_S: Final = 5.0
# An exclusive queue of this prefix + the DLQ's name is the lock of one operation on that DLQ.
LOCK_PREFIX: Final = "hookpipe.dlq-lock."
# How long to wait for another operation on the same DLQ to finish.
LOCK_WAIT_S: Final = 5.0
# Set by replay: the error the message had been dead-lettered with, kept as a record. The
# failure headers themselves go, so that the next failure starts its own history.
HEADER_REPLAYED_ERROR: Final = "x-hookpipe-replayed-error"

# Headers that describe a past failure: a replayed message starts afresh without them.
_FAILURE_HEADERS: Final = frozenset(
    {
        c.HEADER_QUEUE,
        c.HEADER_ERROR_TYPE,
        c.HEADER_ERROR,
        c.HEADER_FIRST_FAILURE,
        c.HEADER_LAST_FAILURE,
        c.HEADER_WORKER,
        topology.RETRY_DELAY_HEADER,
        # Set by the broker: its dead-lettering record, and the delivery count of a quorum queue.
        "x-death",
        "x-delivery-count",
    }
)
_BROKER_DEATH_PREFIXES: Final = ("x-first-death-", "x-last-death-")

# What RabbitMQ's x-death reasons mean, for people reading `dlq show`.
_DEATH_REASONS: Final = {
    "delivery_limit": "the queue's delivery limit was reached (a worker kept crashing on it)",
    "rejected": "a consumer rejected it without requeueing",
    "expired": "its time to live ran out",
    "maxlen": "the queue was full",
}


class DlqError(WorkerError):
    """A dead-letter operation cannot be done; the message says why, in one line."""


class UnknownQueue(DlqError):
    """`--queue` names no handled queue (nor the DLQ of one)."""


class DlqBusy(DlqError):
    """Another dead-letter operation is working on the same DLQ."""


def resolve_queue(name: str) -> str:
    """The handled queue `name` (a handled queue or its DLQ) stands for; UnknownQueue if none."""
    queue = topology.queue_from_dlq_name(name.strip())
    if queue not in handled_queues():
        raise UnknownQueue(
            f"{name!r} is not a handled queue or its DLQ; handled queues: "
            + ", ".join(handled_queues())
        )
    return queue


# --- Reading a dead letter -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message, as read from its DLQ: why it died, when, and its body."""

    dlq: str
    queue: str  # the handled queue it died in, where a replay sends it
    message_id: str | None
    provider: str | None
    event_id: str | None
    event_type: str | None
    dead_lettered_by: str | None  # "worker" (our headers), "broker" (x-death) or None
    error_type: str | None
    error: str | None
    attempts: int | None
    first_failure: datetime | None
    last_failure: datetime | None
    worker: str | None
    replay_count: int
    replayed_at: datetime | None
    replayed_error: str | None  # the error of the dead-lettering before the last replay
    received_at: datetime | None
    request_id: str | None
    timestamp: datetime | None
    headers: Mapping[str, Any]
    body: bytes

    @property
    def failed_at(self) -> datetime | None:
        """When it failed for the last time, or else when it was published: what ages it."""
        return self.last_failure or self.timestamp

    def age(self, now: datetime) -> timedelta | None:
        failed_at = self.failed_at
        return None if failed_at is None else max(now - failed_at, timedelta(0))

    def matches_event_type(self, event_type: str) -> bool:
        """Whether it is of `event_type`, written as the provider does or with the provider."""
        if self.event_type is None:
            return False
        return event_type in (self.event_type, f"{self.provider}.{self.event_type}")


def read_dead_letter(message: AbstractIncomingMessage, queue: str) -> DeadLetter:
    """A DLQ message of handled queue `queue` as a DeadLetter; never raises on odd headers."""
    headers: dict[str, Any] = dict(message.headers or {})
    provider: str | None
    event_id: str | None
    try:
        provider, event_id = identity_of(message.message_id, headers)
    except MalformedMessage:
        provider = event_id = None
    death = _broker_death(headers)
    error = text_header(headers, c.HEADER_ERROR)
    error_type = text_header(headers, c.HEADER_ERROR_TYPE)
    first_failure = _ms_time(headers, c.HEADER_FIRST_FAILURE)
    last_failure = _ms_time(headers, c.HEADER_LAST_FAILURE)
    attempts = int_header(headers, c.HEADER_ATTEMPT)
    dead_lettered_by: str | None = None
    if error is not None or error_type is not None or last_failure is not None:
        dead_lettered_by = "worker"
    elif death is not None:
        dead_lettered_by = "broker"
        reason = text_header(death, "reason") or "unknown"
        error_type = f"broker: {reason}"
        error = _DEATH_REASONS.get(reason, f"dead-lettered by the broker ({reason})")
        death_time = _datetime(death.get("time"))
        first_failure = last_failure = death_time
        # The ingress's attempt header never moved: the handler never finished a delivery.
        attempts = None
    origin = text_header(headers, c.HEADER_QUEUE)
    if origin not in handled_queues() and death is not None:
        origin = text_header(death, "queue")
    return DeadLetter(
        dlq=topology.dlq_name(queue),
        queue=origin if origin in handled_queues() else queue,
        message_id=message.message_id,
        provider=provider,
        event_id=event_id,
        event_type=message.type,
        dead_lettered_by=dead_lettered_by,
        error_type=error_type,
        error=error,
        attempts=attempts,
        first_failure=first_failure,
        last_failure=last_failure,
        worker=text_header(headers, c.HEADER_WORKER),
        replay_count=max(int_header(headers, c.HEADER_REPLAY_COUNT) or 0, 0),
        replayed_at=_ms_time(headers, c.HEADER_REPLAYED_AT),
        replayed_error=text_header(headers, HEADER_REPLAYED_ERROR),
        received_at=_ms_time(headers, c.HEADER_RECEIVED_AT),
        request_id=text_header(headers, c.HEADER_REQUEST_ID),
        timestamp=_aware(message.timestamp),
        headers=headers,
        body=message.body,
    )


def _broker_death(headers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The x-death entry of the broker's own dead-lettering from a handled queue, if any.

    A retried message also carries x-death entries, from the delay queues it expired from; those
    say nothing about why it died.
    """
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    entries = [d for d in deaths if isinstance(d, Mapping)]
    # The broker puts the latest death first.
    for entry in entries:
        if text_header(entry, "queue") in handled_queues():
            return entry
    return None


def replay_headers(letter: DeadLetter, now: int) -> dict[str, Any]:
    """The headers a replayed message carries: attempts reset, failures gone, the replay marked."""
    headers = {
        name: value
        for name, value in letter.headers.items()
        if name not in _FAILURE_HEADERS and not name.startswith(_BROKER_DEATH_PREFIXES)
    }
    headers[c.HEADER_ATTEMPT] = 0
    headers[c.HEADER_REPLAYED_AT] = now
    headers[c.HEADER_REPLAY_COUNT] = letter.replay_count + 1
    if letter.error_type or letter.error:
        record = ": ".join(part for part in (letter.error_type, letter.error) if part)
        headers[HEADER_REPLAYED_ERROR] = record[:MAX_ERROR_CHARS]
    return headers


def _ms_time(headers: Mapping[str, Any], name: str) -> datetime | None:
    ms = int_header(headers, name)
    if ms is None or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _aware(value: datetime | None) -> datetime | None:
    # AMQP timestamps are seconds since the epoch in UTC, whatever the client made of them.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# --- Showing a dead letter -------------------------------------------------------------------


def shown_body(body: bytes, *, reveal: bool = False) -> Any:
    """The body as `show` prints it: decoded JSON with personal data masked; raw with `reveal`.

    A body that is not JSON cannot be masked field by field, so it is withheld unless revealed.
    """
    if reveal:
        return body.decode("utf-8", "replace")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"<{len(body)} bytes, not JSON: withheld, --reveal shows them>"
    return personal.mask(decoded)


def jsonable(value: Any) -> Any:
    """A header value (any AMQP field type) as JSON: times in RFC 3339, bytes as text."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Times on the command line ---------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """A duration back from `now` ("2h") or an ISO 8601 time (UTC unless it has an offset)."""
    try:
        return now - values.duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (90s, 15m, 2h, 1d) nor an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- A session on one DLQ --------------------------------------------------------------------


async def _connect(settings: Settings) -> AbstractConnection:
    # Not the robust connection of the long-running processes: after a silent reconnect the
    # delivery tags of the messages held would mean nothing. A broken connection ends the
    # operation, and the broker gives back what it held.
    try:
        return await aio_pika.connect(
            settings.amqp_url,
            client_properties={"connection_name": connection_name("dlq")},
            timeout=10,
        )
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {type(exc).__name__}") from exc


async def _ready_count(channel: AbstractChannel, queue_name: str) -> int:
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue_name, passive=True)
    return int(declared.message_count or 0)


class _Session:
    """One operation on one DLQ: its lock, a channel, and the messages it holds until the end."""

    def __init__(self, connection: AbstractConnection, queue: str, settings: Settings) -> None:
        self.connection = connection
        self.queue = queue
        self.dlq = topology.dlq_name(queue)
        self.settings = settings
        self._lock_channel: AbstractChannel | None = None
        self._channel: AbstractChannel | None = None
        self._held: list[int] = []
        self._taken = 0
        self.total = 0  # messages ready when the session began: the most it takes

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    @property
    def holding(self) -> int:
        return len(self._held)

    @property
    def taken(self) -> int:
        return self._taken

    async def __aenter__(self) -> _Session:
        await self._lock()
        try:
            # A channel of its own for the check: a missing queue closes the channel it is asked on.
            probe = await self.connection.channel()
            try:
                await probe.declare_queue(self.dlq, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise DlqError(
                    f"{self.dlq} does not exist in this vhost: run 'hookpipe topology declare'"
                ) from None
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await probe.close()
            self._channel = await self.connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self.total = await _ready_count(self.channel, self.dlq)
        except BaseException:
            await self._unlock()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.give_back()
        finally:
            await self._unlock()

    async def _lock(self) -> None:
        name = LOCK_PREFIX + self.dlq
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            channel = await self.connection.channel()
            try:
                await channel.declare_queue(name, exclusive=True, auto_delete=True)
            except aiormq.exceptions.ChannelLockedResource:
                if time.monotonic() >= deadline:
                    raise DlqBusy(
                        f"another 'hookpipe dlq' command is working on {self.dlq}; "
                        "try again when it is done"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            self._lock_channel = channel
            return

    async def _unlock(self) -> None:
        channel, self._lock_channel = self._lock_channel, None
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await channel.queue_delete(LOCK_PREFIX + self.dlq)
            await channel.close()

    async def take(self) -> AbstractIncomingMessage | None:
        """The next message, unacknowledged; None once `total` are taken or the DLQ is empty."""
        if self._taken >= self.total:
            return None
        queue = await self.channel.get_queue(self.dlq, ensure=False)
        message = await queue.get(no_ack=False, fail=False, timeout=self.settings.publish_timeout)
        if message is None:
            self._taken = self.total
            return None
        self._taken += 1
        return message

    def keep(self, message: AbstractIncomingMessage) -> None:
        """Leave the message in the DLQ: it goes back, in order, when the session ends."""
        assert message.delivery_tag is not None
        self._held.append(message.delivery_tag)

    async def remove(self, message: AbstractIncomingMessage) -> None:
        await message.ack()

    async def give_back(self) -> None:
        """Requeue every message kept, in the order taken (see the module's docstring)."""
        # Delivery tags grow in the order messages were taken on the channel.
        held, self._held = sorted(self._held), []
        if not held or self._channel is None or self._channel.is_closed:
            return  # a closed channel's messages went back when it closed
        underlay = await self.channel.get_underlay_channel()
        for start in range(0, len(held), RETURN_CHUNK):
            chunk = held[start : start + RETURN_CHUNK]
            before = await _ready_count(self.channel, self.dlq)
            # Everything unacknowledged up to the chunk's last tag is exactly the chunk: the
            # messages before it were acknowledged or given back already.
            await underlay.basic_nack(chunk[-1], multiple=True, requeue=True)
            deadline = time.monotonic() + RETURN_WAIT_S
            while await _ready_count(self.channel, self.dlq) < before + len(chunk):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def _session(settings: Settings, queue: str) -> AsyncIterator[_Session]:
    connection = await _connect(settings)
    try:
        async with _Session(connection, queue, settings) as session:
            yield session
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await connection.close()


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DlqSummary:
    queue: str
    dlq: str
    messages: int
    oldest_failed_at: datetime | None
    busy: bool = False  # another operation held the DLQ: the count is of what it did not hold


async def list_dlqs(
    settings: Settings,
    queues: Iterable[str] | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> list[DlqSummary]:
    """Each DLQ's message count and oldest failure, reading (and giving back) every message;
    every handled queue's unless `queues` names some.

    Setting `stop` ends it early, with the DLQs done so far."""
    queues = handled_queues() if queues is None else queues
    stop = stop or asyncio.Event()
    summaries = []
    for queue in queues:
        if stop.is_set():
            break
        try:
            async with _session(settings, queue) as session:
                oldest: datetime | None = None
                while not stop.is_set() and (message := await session.take()) is not None:
                    session.keep(message)
                    failed_at = read_dead_letter(message, queue).failed_at
                    if failed_at is not None and (oldest is None or failed_at < oldest):
                        oldest = failed_at
                summaries.append(DlqSummary(queue, session.dlq, session.total, oldest))
        except DlqBusy:
            connection = await _connect(settings)
            try:
                channel = await connection.channel()
                count = await _ready_count(channel, topology.dlq_name(queue))
            finally:
                await connection.close()
            summaries.append(DlqSummary(queue, topology.dlq_name(queue), count, None, busy=True))
    return summaries


# --- show ------------------------------------------------------------------------------------


async def show(
    settings: Settings,
    queue: str,
    limit: int | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> tuple[int, list[DeadLetter]]:
    """(messages in the DLQ, the first `limit` of them); the DLQ is left as it was."""
    stop = stop or asyncio.Event()
    async with _session(settings, queue) as session:
        letters: list[DeadLetter] = []
        # Every message is taken, not only the first `limit`: see the module's docstring.
        while not stop.is_set() and (message := await session.take()) is not None:
            session.keep(message)
            if limit is None or len(letters) < limit:
                letters.append(read_dead_letter(message, queue))
        return session.total, letters


# --- replay ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    event_type: str | None = None
    since: datetime | None = None  # only messages that failed at or after this time
    limit: int | None = None  # the most to move

    def rejects(self, letter: DeadLetter) -> str | None:
        """Why the filter keeps `letter` in the DLQ ("event-type", "since"), or None."""
        if self.event_type is not None and not letter.matches_event_type(self.event_type):
            return "event-type"
        if self.since is not None:
            failed_at = letter.failed_at
            if failed_at is None or failed_at < self.since:
                return "since"
        return None


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """What replay did with one message: moved, would-move (dry run), kept or failed."""

    letter: DeadLetter
    action: str
    reason: str | None = None  # kept: the filter that kept it, or "limit"; failed: the error
    position: int = 0  # 1-based, in the DLQ's order
    total: int = 0


@dataclass(slots=True)
class ReplayReport:
    dlq: str
    total: int  # messages in the DLQ when the replay began
    scanned: int = 0
    moved: int = 0
    would_move: int = 0
    kept: int = 0
    failed: int = 0
    interrupted: bool = False
    dry_run: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def not_scanned(self) -> int:
        return self.total - self.scanned


async def replay(
    settings: Settings,
    queue: str,
    selection: ReplayFilter | None = None,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
    on_step: Callable[[ReplayStep], None] | None = None,
) -> ReplayReport:
    """Move the matching messages of `queue`'s DLQ back to their origin queue; the rest stay, in
    order. `rate` caps messages per second; setting `stop` ends it after the message in hand.
    It stops at the first publish that is not confirmed, leaving that message in the DLQ."""
    selection = selection or ReplayFilter()
    stop = stop or asyncio.Event()
    async with _session(settings, queue) as session:
        report = ReplayReport(session.dlq, session.total, dry_run=dry_run)
        exchange = await session.channel.get_exchange(c.REQUEUE_EXCHANGE, ensure=False)
        started = time.monotonic()
        chosen = 0

        def record(step: ReplayStep) -> None:
            if on_step is not None:
                on_step(step)

        while not stop.is_set():
            limit_reached = selection.limit is not None and chosen >= selection.limit
            if limit_reached and session.holding == 0:
                # Nothing held: stopping here cannot change the order of what stays.
                break
            message = await session.take()
            if message is None:
                break
            report.scanned += 1
            letter = read_dead_letter(message, queue)
            position = report.scanned
            reason = "limit" if limit_reached else selection.rejects(letter)
            if reason is not None:
                session.keep(message)
                report.kept += 1
                record(ReplayStep(letter, "kept", reason, position, report.total))
                continue
            chosen += 1
            if dry_run:
                session.keep(message)
                report.would_move += 1
                record(ReplayStep(letter, "would-move", None, position, report.total))
                continue
            if rate is not None:
                wait = started + (chosen - 1) / rate - time.monotonic()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    session.keep(message)
                    report.scanned -= 1
                    break
            try:
                await exchange.publish(
                    copy_for_republish(message, replay_headers(letter, now_ms())),
                    routing_key=letter.queue,
                    mandatory=True,
                    timeout=settings.publish_timeout,
                )
            except (
                aiormq.exceptions.AMQPError,
                aiormq.exceptions.ChannelInvalidStateError,
                TimeoutError,
                ConnectionError,
            ) as exc:
                # Not confirmed: it stays in the DLQ. It may still have reached the queue (a
                # late confirm), which the ledger's exactly-once makes harmless.
                session.keep(message)
                report.failed += 1
                error = f"publish to {letter.queue} not confirmed: {type(exc).__name__}"
                report.errors.append(error)
                record(ReplayStep(letter, "failed", error, position, report.total))
                break
            await session.remove(message)
            report.moved += 1
            record(ReplayStep(letter, "moved", None, position, report.total))
        report.interrupted = stop.is_set()
        return report


# --- purge -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PurgeReport:
    dlq: str
    removed: int
    kept: int
    confirmed: bool = True


async def purge(
    settings: Settings,
    queue: str,
    *,
    older_than: timedelta | None = None,
    confirm: Callable[[int], Awaitable[bool]] | None = None,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> PurgeReport:
    """Remove every message of `queue`'s DLQ, or those that failed more than `older_than` ago
    (the rest stay, in order). `confirm(count)` is asked first, when given; setting `stop`
    before the answer removes nothing."""
    stop = stop or asyncio.Event()
    async with _session(settings, queue) as session:
        if older_than is None:
            if confirm is not None and not await confirm(session.total):
                return PurgeReport(session.dlq, 0, session.total, confirmed=False)
            dlq = await session.channel.get_queue(session.dlq, ensure=False)
            result = await dlq.purge()
            return PurgeReport(session.dlq, int(result.message_count or 0), 0)
        cutoff = (now or datetime.now(UTC)) - older_than
        old: list[AbstractIncomingMessage] = []
        kept = 0
        # Everything is held until the answer: what is removed is exactly what was counted.
        while not stop.is_set() and (message := await session.take()) is not None:
            failed_at = read_dead_letter(message, queue).failed_at
            if failed_at is not None and failed_at < cutoff:
                old.append(message)
            else:
                session.keep(message)
                kept += 1
        if stop.is_set() or (confirm is not None and old and not await confirm(len(old))):
            for message in old:
                session.keep(message)
            return PurgeReport(session.dlq, 0, kept + len(old), confirmed=False)
        for message in old:
            await session.remove(message)
        return PurgeReport(session.dlq, len(old), kept)
