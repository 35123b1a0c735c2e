"""What a `hookpipe dlq` command works on: the DLQ `--queue` names, and for replay, which of its
messages (`--event-type`, `--since`, `--limit`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hookpipe import constants as c
from hookpipe import topology, values
from hookpipe.providers import handled_queues
from hookpipe.workers.dlq_letter import DeadLetter
from hookpipe.workers.errors import UnknownQueue


def resolve_queue(name: str) -> str:
    """The handled queue `name` (a handled queue or its DLQ) stands for, or hookpipe.unrouted;
    UnknownQueue if neither."""
    if name.strip() == c.UNROUTED_QUEUE:
        return c.UNROUTED_QUEUE
    queue = topology.queue_from_dlq_name(name.strip())
    if queue not in handled_queues():
        raise UnknownQueue(
            f"{name!r} is not a handled queue or its DLQ, nor {c.UNROUTED_QUEUE}; handled queues: "
            + ", ".join(handled_queues())
        )
    return queue


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
