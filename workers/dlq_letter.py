"""A dead letter as read from its DLQ (why it died, when, its body), shown to people, replayed.

Its headers come from a worker (why and when it failed) or from the broker (x-death, when the
broker dead-lettered it itself); reading never raises on odd ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson

from hookpipe import constants as c
from hookpipe import personal, topology
from hookpipe.providers import handled_queues
from hookpipe.workers.messages import identity_if_any, int_header, text_header
from hookpipe.workers.outcome import MAX_ERROR_CHARS

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

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


# What an unrouted message's reason says: the alternate exchange took it, no queue being bound.
UNROUTED_ERROR_TYPE: Final = "unrouted"


def letters_queue(queue: str) -> str:
    """The queue that holds `queue`'s dead letters: its DLQ, or hookpipe.unrouted itself."""
    return c.UNROUTED_QUEUE if queue == c.UNROUTED_QUEUE else topology.dlq_name(queue)


# --- Reading a dead letter -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered message, as read from its DLQ: why it died, when, and its body."""

    dlq: str  # the queue it was read from: a DLQ, or hookpipe.unrouted
    # The handled queue it died in, where a replay sends it; for an unrouted message, the
    # routing key no queue was bound for ({provider}.{event type}), which a handler may now take.
    queue: str
    message_id: str | None
    provider: str | None
    event_id: str | None
    event_type: str | None
    # "worker" (our headers), "broker" (x-death), "unrouted" (hookpipe.unrouted) or None
    dead_lettered_by: str | None
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

    def matches_event_type(self, event_type: str) -> bool:
        """Whether it is of `event_type`, written as the provider does or with the provider."""
        if self.event_type is None:
            return False
        return event_type in (self.event_type, f"{self.provider}.{self.event_type}")


def read_dead_letter(message: AbstractIncomingMessage, queue: str) -> DeadLetter:
    """A DLQ message of handled queue `queue` (or a message of hookpipe.unrouted, `queue` being
    that) as a DeadLetter; never raises on odd headers."""
    headers: dict[str, Any] = dict(message.headers or {})
    provider, event_id = identity_if_any(message.message_id, headers)
    if queue == c.UNROUTED_QUEUE:
        return _unrouted(message, headers, provider, event_id)
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
        timestamp=aware(message.timestamp),
        headers=headers,
        body=message.body,
    )


def _unrouted(
    message: AbstractIncomingMessage,
    headers: dict[str, Any],
    provider: str | None,
    event_id: str | None,
) -> DeadLetter:
    """A message the alternate exchange put in hookpipe.unrouted: no queue was bound for its
    routing key when the ingress published it. It never failed: its age is its receipt's."""
    key = f"{provider}.{message.type}" if provider and message.type else message.routing_key
    received_at = _ms_time(headers, c.HEADER_RECEIVED_AT) or aware(message.timestamp)
    handled = key in handled_queues()
    return DeadLetter(
        dlq=c.UNROUTED_QUEUE,
        queue=key or "",
        message_id=message.message_id,
        provider=provider,
        event_id=event_id,
        event_type=message.type,
        dead_lettered_by="unrouted",
        error_type=UNROUTED_ERROR_TYPE,
        error=f"no queue was bound for routing key {key!r}"
        + ("; it has a handler now, 'dlq replay' moves it" if handled else "; no handler for it"),
        attempts=None,
        first_failure=received_at,
        last_failure=received_at,
        worker=None,
        replay_count=max(int_header(headers, c.HEADER_REPLAY_COUNT) or 0, 0),
        replayed_at=_ms_time(headers, c.HEADER_REPLAYED_AT),
        replayed_error=text_header(headers, HEADER_REPLAYED_ERROR),
        received_at=_ms_time(headers, c.HEADER_RECEIVED_AT),
        request_id=text_header(headers, c.HEADER_REQUEST_ID),
        timestamp=aware(message.timestamp),
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
        return aware(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def aware(value: datetime | None) -> datetime | None:
    """A message's timestamp, in UTC."""
    # AMQP timestamps are seconds since the epoch in UTC, whatever the client made of them.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


# --- Showing it ------------------------------------------------------------------------------


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
