"""The dead-letter operations: list, show, replay and purge the DLQ of a handled queue, or
hookpipe.unrouted (the webhooks no queue was bound for when they came).

Each works in a session (hookpipe.workers.dlq_session) that takes the DLQ's messages and gives
back, in order, those the operation does not remove.

Replay publishes each message to the requeue exchange, routed by its origin queue's name, with
a publisher confirm, and acknowledges it from the DLQ only once confirmed. A crash between the
two leaves the message in both queues; the ledger records each processed event, so its second
run changes nothing. The reverse, acknowledged but not published, cannot happen.

An unrouted message is replayed the same way, to the handled queue named as its routing key
({provider}.{event type}), once this installation has a handler for it; one still without a
handler stays in hookpipe.unrouted, in its place. The requeue exchange, not hookpipe.events: it
routes to that one queue only, and it has no alternate exchange, so a queue not yet declared
makes the publish fail (the message stays) instead of sending it round to hookpipe.unrouted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiormq
from aio_pika.abc import AbstractIncomingMessage

from hookpipe import constants as c
from hookpipe.broker import UNCONFIRMED
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers.dlq_letter import (
    DeadLetter,
    letters_queue,
    read_dead_letter,
    replay_headers,
)
from hookpipe.workers.dlq_select import ReplayFilter
from hookpipe.workers.dlq_session import DlqSession, connect, open_session, ready_count
from hookpipe.workers.errors import DlqBusy
from hookpipe.workers.messages import copy_for_republish, now_ms

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
    every handled queue's and hookpipe.unrouted unless `queues` names some.

    Setting `stop` ends it early, with the DLQs done so far."""
    queues = letter_queues() if queues is None else queues
    stop = stop or asyncio.Event()
    summaries = []
    for queue in queues:
        if stop.is_set():
            break
        try:
            async with open_session(settings, queue) as session:
                summaries.append(await summarize(session, stop))
        except DlqBusy:
            connection = await connect(settings)
            try:
                channel = await connection.channel()
                count = await ready_count(channel, letters_queue(queue))
            finally:
                await connection.close()
            summaries.append(DlqSummary(queue, letters_queue(queue), count, None, busy=True))
    return summaries


def letter_queues() -> tuple[str, ...]:
    """Every handled queue (standing for its DLQ), and hookpipe.unrouted."""
    return (*handled_queues(), c.UNROUTED_QUEUE)


async def summarize(session: DlqSession, stop: asyncio.Event) -> DlqSummary:
    """The count and oldest failure of the session's DLQ, reading (and giving back) each message."""
    oldest: datetime | None = None
    while not stop.is_set() and (message := await session.take()) is not None:
        session.keep(message)
        failed_at = read_dead_letter(message, session.queue).failed_at
        if failed_at is not None and (oldest is None or failed_at < oldest):
            oldest = failed_at
    return DlqSummary(session.queue, session.dlq, session.total, oldest)


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
    async with open_session(settings, queue) as session:
        letters: list[DeadLetter] = []
        # Every message is taken, not only the first `limit`: see dlq_session's docstring.
        while not stop.is_set() and (message := await session.take()) is not None:
            session.keep(message)
            if limit is None or len(letters) < limit:
                letters.append(read_dead_letter(message, queue))
        return session.total, letters


# --- replay ----------------------------------------------------------------------------------

# Why replay kept an unrouted message: this installation has no handler for its routing key.
NO_HANDLER = "no-handler"


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """What replay did with one message: moved, would-move (dry run), kept or failed."""

    letter: DeadLetter
    action: str
    # kept: the filter that kept it, "limit", or NO_HANDLER (unrouted); failed: the error
    reason: str | None = None
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
    no_handler: int = 0  # of those kept: unrouted messages no handler takes yet
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
    async with open_session(settings, queue) as session:
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
            if reason is None and letter.queue not in handled_queues():
                # Unrouted, and still no handler: it stays where it is, for a later replay.
                reason = NO_HANDLER
                report.no_handler += 1
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
            except UNCONFIRMED as exc:
                # Not confirmed: it stays in the DLQ. It may still have reached the queue (a
                # late confirm), which the ledger's exactly-once makes harmless.
                session.keep(message)
                report.failed += 1
                error = f"publish to {letter.queue} not confirmed: {type(exc).__name__}"
                if isinstance(exc, aiormq.exceptions.PublishError):
                    error += " (the broker routed it nowhere: run 'hookpipe topology declare')"
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
    async with open_session(settings, queue) as session:
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
