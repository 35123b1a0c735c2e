"""`hookpipe events list / show / replay / export`: the archive of every accepted webhook.

Results go to stdout (one JSON object per line with `--json`, and always for `export`), progress
and the count of what was read to stderr. Exit codes as `hookpipe dlq`'s: 0 done, 1 something
failed (the broker or the ledger unreachable, a publish not confirmed, no such event), 2 bad
arguments, 130 interrupted by Ctrl-C (after the event in hand; the summary says how far).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from hookpipe import cli_args, providers
from hookpipe.settings import Settings
from hookpipe.workers.cli_support import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Progress,
    finish_replay,
    human_age,
    interruptible,
    print_json,
)

if TYPE_CHECKING:
    from hookpipe.workers.archive import ArchivedEvent, ReadStats, Selection
    from hookpipe.workers.ledger import AppliedEvent, Ledger

# `events list` without --since: the last hour (a list never reads the whole archive unasked).
DEFAULT_LIST_SINCE = "1h"
# How long `replay` waits, after its last publish, for the workers to apply what it replayed.
DEFAULT_REPLAY_WAIT_S = 30.0


def configure(parser: argparse.ArgumentParser) -> None:
    """The list, show, replay and export subcommands and their options."""
    commands = parser.add_subparsers(
        dest="action", required=True, metavar="{list,show,replay,export}"
    )

    def filters(command: argparse.ArgumentParser, since_help: str) -> None:
        command.add_argument("--provider", choices=providers.names(), help="only this provider")
        command.add_argument(
            "--event-type",
            metavar="T",
            help="only this event type (order.payment.debited, or with the provider)",
        )
        command.add_argument("--event-id", metavar="ID", help="only this event id")
        command.add_argument(
            "--since",
            metavar="WHEN",
            help=f"received at or after: a duration back (2h, 30m, 1d) or an ISO 8601 time "
            f"(UTC unless it has an offset); {since_help}",
        )
        command.add_argument(
            "--until", metavar="WHEN", help="received before (same forms as --since)"
        )

    listing = commands.add_parser("list", help="archived webhooks of a time window")
    filters(listing, f"default {DEFAULT_LIST_SINCE}")
    listing.add_argument(
        "--limit",
        type=cli_args.positive_int,
        default=50,
        metavar="N",
        help="at most N (default 50): the newest N, or the oldest with --oldest-first",
    )
    listing.add_argument("--oldest-first", action="store_true", help="oldest first")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = commands.add_parser(
        "show", help="one webhook: headers, body (personal data masked), what the ledger did"
    )
    show.add_argument("provider", choices=providers.names())
    show.add_argument("event_id", help="the provider's event id")
    show.add_argument(
        "--since",
        metavar="WHEN",
        help="look only at what was received since (default: the ledger's receipt time of "
        "the event, else the whole archive)",
    )
    show.add_argument(
        "--reveal", action="store_true", help="print the body as it came, personal data included"
    )
    show.add_argument("--json", action="store_true", help="one JSON object per copy archived")

    replay = commands.add_parser(
        "replay", help="republish archived webhooks to their handled queues"
    )
    filters(replay, "required")
    replay.add_argument("--limit", type=cli_args.positive_int, metavar="N", help="at most N")
    replay.add_argument(
        "--rate", type=cli_args.positive_float, metavar="N", help="at most N events per second"
    )
    replay.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_REPLAY_WAIT_S,
        metavar="S",
        help="seconds to wait for the workers to apply what was replayed "
        f"(default {DEFAULT_REPLAY_WAIT_S:g}; 0: do not wait)",
    )
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    replay.add_argument("--json", action="store_true", help="a JSON line per event and a summary")

    export = commands.add_parser(
        "export", help="archived webhooks as JSON lines (headers, body as text or base64)"
    )
    filters(export, "default: the whole archive")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the subcommand; the exit code."""
    from hookpipe.workers.archive import Selection
    from hookpipe.workers.dlq_select import parse_since

    now = datetime.now(UTC)
    times: dict[str, datetime | None] = {"since": None, "until": None}
    for name in times:
        text = getattr(args, name, None)
        if name == "since" and text is None and args.action == "list":
            text = DEFAULT_LIST_SINCE
        if text is None:
            continue
        try:
            times[name] = parse_since(text, now)
        except ValueError as exc:
            return _fail(f"--{name}: {exc}", EXIT_USAGE)
    since, until = times["since"], times["until"]
    if since is not None and until is not None and until <= since:
        return _fail("--until must be later than --since", EXIT_USAGE)
    if args.action == "replay" and since is None:
        return _fail("replay needs --since: a window, never the whole archive by accident", 2)
    if args.action == "show":
        selection = Selection(provider=args.provider, event_id=args.event_id, since=since)
    else:
        selection = Selection(args.provider, args.event_type, args.event_id, since, until)
    return asyncio.run(_run(args, settings, selection))


async def _run(args: argparse.Namespace, settings: Settings, selection: Selection) -> int:
    import aiormq

    from hookpipe.errors import HookpipeError

    try:
        async with interruptible() as stop:
            match args.action:
                case "list":
                    return await _list(args, settings, selection, stop)
                case "show":
                    return await _show(args, settings, selection, stop)
                case "replay":
                    return await _replay(args, settings, selection, stop)
                case "export":
                    return await _export(settings, selection, stop)
    except HookpipeError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except BrokenPipeError:
        # The reader of our output went away (`... | head -1`): stop there, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("the output was closed; stopped", EXIT_FAILED)
    except (OSError, RuntimeError, aiormq.exceptions.AMQPError) as exc:
        return _fail(f"the broker connection failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
    raise AssertionError(f"unknown action {args.action}")


@contextlib.asynccontextmanager
async def _reading(
    settings: Settings, selection: Selection, stats: ReadStats, stop: asyncio.Event, **bounds: Any
) -> AsyncIterator[AsyncIterator[ArchivedEvent]]:
    from hookpipe.workers.archive import read

    async with contextlib.aclosing(
        read(settings, selection, stats=stats, stop=stop, **bounds)
    ) as events:
        yield events


def _read_line(stats: ReadStats, what: str) -> str:
    """What a read cost, for stderr: the figure that shows a window was not the whole stream."""
    where = ""
    if stats.first_offset is not None:
        where = f", offsets {stats.first_offset}-{stats.last_offset}"
    newest = "" if stats.tail is None else f" of the {stats.tail + 1} the archive holds at most"
    return f"{what}; read {stats.read} archived webhooks{newest}{where}"


# --- list ------------------------------------------------------------------------------------


async def _list(
    args: argparse.Namespace, settings: Settings, selection: Selection, stop: asyncio.Event
) -> int:
    from hookpipe.workers.archive import ReadStats, window_text

    stats = ReadStats()
    started = time.monotonic()
    # Newest first keeps only the last N of the window: memory bounded by --limit.
    shown: deque[ArchivedEvent] = deque(maxlen=None if args.oldest_first else args.limit)
    async with _reading(settings, selection, stats, stop) as events:
        async for event in events:
            shown.append(event)
            if args.oldest_first and len(shown) >= args.limit:
                stats.stopped_by = "limit"
                break
    ordered = list(shown) if args.oldest_first else list(reversed(shown))
    if args.json:
        for event in ordered:
            print_json(event_summary_json(event))
    else:
        print(_table(ordered) if ordered else f"no archived webhooks {window_text(selection)}")
    seconds = time.monotonic() - started
    print(
        _read_line(stats, f"{len(ordered)} shown of {stats.matched} matching")
        + f" in {seconds:.2f} s",
        file=sys.stderr,
    )
    if stop.is_set():
        return _fail("interrupted; the list is of what was read by then", EXIT_INTERRUPTED)
    return EXIT_OK


def event_summary_json(event: ArchivedEvent) -> dict[str, Any]:
    """An archived webhook as `list --json` prints it (no body)."""
    from hookpipe.workers.dlq_letter import iso

    return {
        "offset": event.offset,
        "received_at": iso(event.received_at),
        "provider": event.provider,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "message_id": event.message_id,
        "queue": event.queue,
        "request_id": event.request_id,
        "body_bytes": len(event.body),
    }


def _table(events: list[ArchivedEvent]) -> str:
    header = ("RECEIVED (UTC)", "PROVIDER", "EVENT TYPE", "EVENT ID", "BYTES", "OFFSET")
    rows = [header] + [
        (
            "-" if e.received_at is None else f"{e.received_at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
            e.provider or "-",
            e.event_type or "-",
            e.event_id or "-",
            str(len(e.body)),
            str(e.offset),
        )
        for e in events
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


# --- show ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fate:
    """What became of an event: applied (when, to which payment), or why not."""

    applied: AppliedEvent | None
    reason: str | None  # why it is not applied, when it is not


async def _show(
    args: argparse.Namespace, settings: Settings, selection: Selection, stop: asyncio.Event
) -> int:
    from hookpipe.workers.archive import ReadStats, Selection, one_event

    fate_error: str | None = None
    applied: AppliedEvent | None = None
    try:
        applied = await _applied(settings, args.provider, args.event_id)
    except Exception as exc:  # the archive is worth showing without the ledger
        fate_error = f"the ledger could not be read: {exc}"
    if selection.since is None and applied is not None and applied.received_at_ms is not None:
        # The ledger knows when it came: read a millisecond of the archive, not all of it.
        selection = one_event(args.provider, args.event_id, applied.received_at_ms)
    stats = ReadStats()
    copies: list[ArchivedEvent] = []
    async with _reading(settings, selection, stats, stop) as events:
        async for event in events:
            copies.append(event)
    if not copies and selection.since is not None and args.since is None:
        # Not where the ledger placed it (a provider's retry, say): the whole archive then.
        selection = Selection(provider=args.provider, event_id=args.event_id)
        stats = ReadStats()
        async with _reading(settings, selection, stats, stop) as events:
            async for event in events:
                copies.append(event)
    if stop.is_set():
        return _fail("interrupted", EXIT_INTERRUPTED)
    if not copies:
        print(_read_line(stats, "not found"), file=sys.stderr)
        return _fail(
            f"no webhook {args.event_id!r} of {args.provider} in the archive"
            + (" since then" if args.since else " (older ones are past its retention)"),
            EXIT_FAILED,
        )
    fate = fate_error or await _fate(settings, copies[0], applied, stop)
    for position, event in enumerate(copies, 1):
        if args.json:
            print_json(event_json(event, reveal=args.reveal) | {"ledger": _fate_json(fate)})
        else:
            if position > 1:
                print()
            print(_event_block(event, fate, position, len(copies), reveal=args.reveal))
    return EXIT_OK


async def _applied(settings: Settings, provider: str, event_id: str) -> AppliedEvent | None:
    async with await _open_ledger(settings) as ledger:
        return await ledger.applied(provider, event_id)


async def _open_ledger(settings: Settings) -> Ledger:
    from hookpipe.workers.ledger import Ledger

    return await Ledger.open(settings.ledger_url, create=False, timeout=settings.ledger_timeout)


async def _fate(
    settings: Settings, event: ArchivedEvent, applied: AppliedEvent | None, stop: asyncio.Event
) -> Fate:
    """Applied, or else why not: no queue handles it, it is dead-lettered, or still on its way."""
    from hookpipe import constants as c
    from hookpipe import topology
    from hookpipe.workers.dlq_ops import show
    from hookpipe.workers.errors import DlqError

    if applied is None:
        # Recorded under its id and type (DreamClass): known only now that its type is.
        with contextlib.suppress(Exception):
            if event.provider is not None and event.event_id is not None:
                async with await _open_ledger(settings) as ledger:
                    applied = await ledger.applied(event.provider, event.event_id, event.event_type)
    if applied is not None:
        return Fate(applied, None)
    queue = event.queue
    if queue is None:
        return Fate(None, f"no queue handles {event.routing_key}: it went to {c.UNROUTED_QUEUE}")
    try:
        _, letters = await show(settings, queue, stop=stop)
    except DlqError as exc:
        return Fate(None, f"not applied; {topology.dlq_name(queue)} could not be read: {exc}")
    for letter in letters:
        if letter.message_id == event.message_id:
            why = ": ".join(p for p in (letter.error_type, letter.error) if p) or "no reason"
            return Fate(None, f"dead-lettered in {letter.dlq}: {why}")
    return Fate(None, f"not applied yet: in {queue} or waiting for a retry")


def _fate_json(fate: Fate | str) -> dict[str, Any]:
    from hookpipe.workers.dlq_letter import iso

    if isinstance(fate, str):
        return {"applied": None, "reason": fate}
    if fate.applied is None:
        return {"applied": False, "reason": fate.reason}
    return {
        "applied": True,
        "applied_at": iso(fate.applied.applied_at),
        "payment_id": fate.applied.payment_id,
        "status": fate.applied.status,
    }


def event_json(event: ArchivedEvent, *, reveal: bool = False) -> dict[str, Any]:
    """An archived webhook as `show --json` prints it: headers, and the body masked."""
    from hookpipe.workers.dlq_letter import jsonable, shown_body

    return event_summary_json(event) | {
        "routing_key": event.routing_key,
        "headers": jsonable(dict(event.headers)),
        "body": shown_body(event.body, reveal=reveal),
    }


def _event_block(
    event: ArchivedEvent, fate: Fate | str, position: int, copies: int, *, reveal: bool
) -> str:
    from hookpipe.workers.dlq_letter import jsonable, shown_body

    now = datetime.now(UTC)
    received = "-"
    if event.received_at is not None:
        age = human_age(now - event.received_at)
        received = f"{event.received_at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f" UTC ({age} ago)"
    if isinstance(fate, str):
        ledger = fate
    elif fate.applied is not None:
        a = fate.applied
        ledger = (
            f"applied {a.applied_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC to payment "
            f"{a.payment_id} (status then: {a.status or '-'})"
        )
    else:
        ledger = fate.reason or "not applied"
    copy = f"  (copy {position} of {copies} archived)" if copies > 1 else ""
    lines = [
        f"{event.message_id or '(no message id)'}  {event.event_type or '(no type)'}{copy}",
        f"  received:   {received}",
        f"  queue:      {event.queue or '(none: hookpipe.unrouted)'}",
        f"  request id: {event.request_id or '-'}",
        f"  offset:     {event.offset}",
        f"  ledger:     {ledger}",
        "  headers:",
    ]
    for name, value in sorted(jsonable(dict(event.headers)).items()):
        lines.append(f"    {name}: {value}")
    body = shown_body(event.body, reveal=reveal)
    text = (
        body if isinstance(body, str) else orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    )
    lines.append("  body" + (" (as received):" if reveal else " (personal data masked):"))
    lines.extend("    " + line for line in text.splitlines() or [""])
    return "\n".join(lines)


# --- export ----------------------------------------------------------------------------------


def export_json(event: ArchivedEvent) -> dict[str, Any]:
    """One line of `export`: everything published, the body as UTF-8 text or else base64."""
    from hookpipe.workers.dlq_letter import iso, jsonable

    try:
        body, encoding = event.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(event.body).decode("ascii"), "base64"
    return {
        "offset": event.offset,
        "message_id": event.message_id,
        "provider": event.provider,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "routing_key": event.routing_key,
        "received_at": iso(event.received_at),
        "received_at_ms": event.received_at_ms,
        "timestamp": iso(event.timestamp),
        "content_type": event.content_type,
        "app_id": event.app_id,
        "headers": jsonable(dict(event.headers)),
        "body_encoding": encoding,
        "body": body,
    }


def exported_body(line: dict[str, Any]) -> bytes:
    """The webhook's bytes back from an export line."""
    if line["body_encoding"] == "base64":
        return base64.b64decode(line["body"])
    return str(line["body"]).encode("utf-8")


async def _export(settings: Settings, selection: Selection, stop: asyncio.Event) -> int:
    from hookpipe.workers.archive import ReadStats

    stats = ReadStats()
    write = sys.stdout.buffer.write
    async with _reading(settings, selection, stats, stop) as events:
        async for event in events:
            write(orjson.dumps(export_json(event)) + b"\n")
    sys.stdout.flush()
    print(_read_line(stats, f"exported {stats.matched}"), file=sys.stderr)
    if stop.is_set():
        return _fail("interrupted; the export stops at the last complete line", EXIT_INTERRUPTED)
    return EXIT_OK


# --- replay ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    matched: int = 0
    replayed: int = 0  # published and confirmed (dry run: would be)
    already_applied: int = 0  # the ledger had applied them before: their replay changes nothing
    applied_now: int = 0
    not_applied: int = 0  # not applied by the end of --wait
    unhandled: int = 0  # no queue handles their type: not replayed
    failed: int = 0
    dry_run: bool = False
    interrupted: bool = False
    read: int = 0
    errors: list[str] | None = None


async def _replay(
    args: argparse.Namespace, settings: Settings, selection: Selection, stop: asyncio.Event
) -> int:
    progress = Progress(sys.stderr) if sys.stderr.isatty() and not args.json else None

    def on_step(event: ArchivedEvent, action: str, fraction: float) -> None:
        if args.json:
            print_json({"offset": event.offset, "message_id": event.message_id, "action": action})
        elif progress is not None:
            progress.update(action, fraction, f"offset {event.offset}")

    try:
        report = await replay(
            settings,
            selection,
            limit=args.limit,
            rate=args.rate,
            dry_run=args.dry_run,
            wait=max(args.wait, 0.0),
            stop=stop,
            on_step=on_step,
        )
    finally:
        if progress is not None:
            progress.close()
    return finish_replay(
        report,
        command="events",
        as_json=args.json,
        summary=lambda: _replay_json(report),
        line=lambda: _replay_line(report),
        errors=report.errors or [],
    )


async def replay(
    settings: Settings,
    selection: Selection,
    *,
    limit: int | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    wait: float = DEFAULT_REPLAY_WAIT_S,
    stop: asyncio.Event | None = None,
    on_step: Callable[[ArchivedEvent, str, float], None] | None = None,
) -> ReplayReport:
    """Republish the archived webhooks `selection` matches to their handled queues, each with a
    confirm, through hookpipe.requeue (so to that queue alone, and not into the archive again).

    Then read the same offsets again and ask the ledger what became of each: applied before the
    replay (a no-op), applied since, or not (yet). Memory stays constant: nothing is kept per
    event between the two passes.
    """
    import aiormq

    from hookpipe import constants as c
    from hookpipe.broker import UNCONFIRMED
    from hookpipe.workers.archive import ReadStats
    from hookpipe.workers.dlq_session import connect
    from hookpipe.workers.messages import now_ms

    stop = stop or asyncio.Event()
    report = ReplayReport(dry_run=dry_run, errors=[])
    stats = ReadStats()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    step = on_step or (lambda *_: None)
    async with await _open_ledger(settings) as ledger:
        connection = await connect(settings, "events")
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.get_exchange(c.REQUEUE_EXCHANGE, ensure=False)
            async with _reading(settings, selection, stats, stop) as events:
                async for event in events:
                    if limit is not None and report.matched >= limit:
                        stats.stopped_by = "limit"
                        break
                    report.matched += 1
                    queue = event.queue
                    if queue is None or event.provider is None or event.event_id is None:
                        report.unhandled += 1
                        step(event, "unhandled", stats.fraction())
                        continue
                    if (
                        await ledger.applied(event.provider, event.event_id, event.event_type)
                        is not None
                    ):
                        report.already_applied += 1
                    if dry_run:
                        report.replayed += 1
                        step(event, "would-replay", stats.fraction())
                        continue
                    if rate is not None:
                        delay = started + report.replayed / rate - time.monotonic()
                        if delay > 0:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), delay)
                            if stop.is_set():
                                break
                    try:
                        await exchange.publish(
                            _replay_message(event, now_ms()),
                            routing_key=queue,
                            mandatory=True,
                            timeout=settings.publish_timeout,
                        )
                    except UNCONFIRMED as exc:
                        report.failed += 1
                        assert report.errors is not None
                        report.errors.append(
                            f"publish to {queue} not confirmed: {type(exc).__name__}; "
                            f"stopped at offset {event.offset}"
                        )
                        step(event, "failed", stats.fraction())
                        break
                    report.replayed += 1
                    step(event, "replayed", stats.fraction())
        finally:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await connection.close()
        report.read = stats.read
        report.interrupted = stop.is_set()
        if dry_run or report.replayed == 0 or stats.first_offset is None:
            return report
        # Second pass over the same offsets: what did the ledger make of them?
        deadline = time.monotonic() + wait
        check = ReadStats()
        counted = 0
        async with _reading(
            settings,
            selection,
            check,
            stop,
            from_offset=stats.first_offset,
            to_offset=stats.last_offset,
        ) as events:
            async for event in events:
                if counted >= report.matched - report.unhandled:
                    break
                if event.queue is None or event.provider is None or event.event_id is None:
                    continue
                counted += 1
                applied = await ledger.applied(event.provider, event.event_id, event.event_type)
                while applied is None and time.monotonic() < deadline and not stop.is_set():
                    await asyncio.sleep(0.05)
                    applied = await ledger.applied(event.provider, event.event_id, event.event_type)
                if applied is None:
                    report.not_applied += 1
                elif applied.applied_at >= started_at:
                    report.applied_now += 1
        return report


def _replay_message(event: ArchivedEvent, now: int) -> Any:
    """The archived webhook as the ingress published it, marked as replayed from the archive."""
    import aio_pika

    from hookpipe import constants as c
    from hookpipe.workers.messages import int_header

    headers = dict(event.headers)
    headers[c.HEADER_ATTEMPT] = 0
    headers[c.HEADER_REPLAYED_AT] = now
    headers[c.HEADER_REPLAY_COUNT] = (int_header(headers, c.HEADER_REPLAY_COUNT) or 0) + 1
    headers[c.HEADER_REPLAYED_FROM] = f"{c.ARCHIVE_STREAM}@{event.offset}"
    return aio_pika.Message(
        event.body,
        headers=headers,
        content_type=event.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.message_id,
        timestamp=event.timestamp,
        type=event.event_type,
        app_id=event.app_id,
    )


def _replay_json(report: ReplayReport) -> dict[str, Any]:
    return {
        "matched": report.matched,
        "replayed": report.replayed,
        "already_applied": report.already_applied,
        "applied_now": report.applied_now,
        "not_applied": report.not_applied,
        "unhandled": report.unhandled,
        "failed": report.failed,
        "read": report.read,
        "dry_run": report.dry_run,
        "interrupted": report.interrupted,
        "errors": report.errors or [],
    }


def _replay_line(report: ReplayReport) -> str:
    skipped = f", {report.unhandled} of no handled type skipped" if report.unhandled else ""
    if report.dry_run:
        return (
            f"dry run: {report.replayed} would be replayed, of which {report.already_applied} "
            f"already applied (no-ops){skipped}; {report.read} archived webhooks read"
        )
    line = (
        f"replayed {report.replayed}: {report.already_applied} already applied (no change), "
        f"{report.applied_now} applied now, {report.not_applied} not applied yet"
        f"{skipped}; failed {report.failed}"
    )
    if report.not_applied:
        line += " (still queued or retrying: see 'hookpipe dlq list')"
    if report.interrupted:
        line += "; interrupted: what was not reached was not replayed"
    return line


def _fail(message: str, code: int) -> int:
    print(f"hookpipe events: {message}", file=sys.stderr)
    return code
