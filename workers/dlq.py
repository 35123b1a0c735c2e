"""`hookpipe dlq list / show / replay / purge`: inspect, replay and purge dead letters.

Results go to stdout (one JSON object per line with `--json`), progress and questions to stderr.
Exit codes: 0 done, 1 something failed (a publish not confirmed, the broker unreachable, the DLQ
busy, a purge not confirmed), 2 bad arguments, 130 interrupted by Ctrl-C (after the message in
hand; the summary says how far it got).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from hookpipe import cli_args
from hookpipe import constants as c
from hookpipe.providers import handled_queues
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
    from hookpipe.workers.dlq_letter import DeadLetter
    from hookpipe.workers.dlq_ops import DlqSummary, ReplayReport, ReplayStep


# `dlq exporter` (hookpipe.workers.dlq_exporter, which imports prometheus_client: not before a
# worker has chosen its metrics mode, so not from here). Seconds between scans: an alert on a
# dead letter's age speaks in hours, a minute is plenty.
EXPORTER_INTERVAL = 60.0
# Messages a scan reads from one DLQ at most: about a second of basic.get on a local broker, and
# under the DLQ lock's wait, so that an operator's command arriving meanwhile waits, not fails.
EXPORTER_MAX_SCAN = 5000
# Above the workers' metrics ports (9101 and the 9 above it a second worker on a host may take).
EXPORTER_PORT = 9120


def configure(parser: argparse.ArgumentParser) -> None:
    """The list, show, replay and purge subcommands and their options."""
    handled = ", ".join(handled_queues())
    queue_help = (
        f"a handled queue or its .dlq ({handled}), or {c.UNROUTED_QUEUE}: the webhooks no queue"
        " was bound for"
    )
    commands = parser.add_subparsers(
        dest="action", required=True, metavar="{list,show,replay,purge,exporter}"
    )

    listing = commands.add_parser(
        "list",
        help=f"every DLQ and {c.UNROUTED_QUEUE} with its message count and oldest age",
    )
    listing.add_argument("--queue", metavar="Q", help=f"only this one: {queue_help}")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = commands.add_parser("show", help="the messages of a DLQ, personal data masked")
    show.add_argument("--queue", metavar="Q", required=True, help=queue_help)
    show.add_argument(
        "--limit",
        type=cli_args.positive_int,
        default=20,
        metavar="N",
        help="show the first N messages (default 20)",
    )
    show.add_argument(
        "--reveal", action="store_true", help="print bodies as they are, personal data included"
    )
    show.add_argument("--json", action="store_true", help="one JSON object per message")

    replay = commands.add_parser("replay", help="move dead letters back to their queue")
    replay.add_argument("--queue", metavar="Q", required=True, help=queue_help)
    replay.add_argument(
        "--event-type",
        metavar="T",
        help="only this event type (order.payment.debited or with the provider)",
    )
    replay.add_argument(
        "--since",
        metavar="WHEN",
        help="only those that failed since: a duration back (2h, 30m, 1d) or an "
        "ISO 8601 time (UTC unless it has an offset)",
    )
    replay.add_argument("--limit", type=cli_args.positive_int, metavar="N", help="move at most N")
    replay.add_argument(
        "--rate", type=cli_args.positive_float, metavar="N", help="at most N messages per second"
    )
    replay.add_argument("--dry-run", action="store_true", help="say what would move; move nothing")
    replay.add_argument(
        "--json", action="store_true", help="a JSON line per message and one for the summary"
    )

    purge = commands.add_parser("purge", help="delete dead letters")
    purge.add_argument("--queue", metavar="Q", required=True, help=queue_help)
    purge.add_argument(
        "--older-than",
        type=cli_args.positive_duration,
        metavar="DURATION",
        help="only those that failed longer ago than this (2h, 7d, 1h30m)",
    )
    purge.add_argument("--yes", action="store_true", help="do not ask before deleting")

    exporter = commands.add_parser(
        "exporter",
        help="serve each DLQ's depth and oldest age as Prometheus gauges (one per vhost)",
    )
    exporter.add_argument(
        "--port",
        type=cli_args.listen_port,
        default=EXPORTER_PORT,
        metavar="P",
        help=f"serve /metrics, /healthz, /readyz here (default {EXPORTER_PORT})",
    )
    exporter.add_argument(
        "--interval",
        type=cli_args.positive_float,
        default=EXPORTER_INTERVAL,
        metavar="S",
        help=f"seconds between scans (default {EXPORTER_INTERVAL:g})",
    )
    exporter.add_argument(
        "--max-scan",
        type=cli_args.positive_int,
        default=EXPORTER_MAX_SCAN,
        metavar="N",
        help=f"read no DLQ deeper than this; its last age stands (default {EXPORTER_MAX_SCAN})",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the subcommand; the exit code."""
    from hookpipe.workers.dlq_select import resolve_queue
    from hookpipe.workers.errors import UnknownQueue

    if args.action == "exporter":
        from hookpipe.workers.dlq_exporter import serve

        return asyncio.run(serve(settings, args.port, args.interval, args.max_scan))
    try:
        queue = resolve_queue(args.queue) if args.queue else None
    except UnknownQueue as exc:
        return _fail(str(exc), EXIT_USAGE)
    since = None
    if args.action == "replay" and args.since:
        from hookpipe.workers.dlq_select import parse_since

        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError as exc:
            return _fail(f"--since: {exc}", EXIT_USAGE)
    if args.action == "purge" and not args.yes and not sys.stdin.isatty():
        return _fail(
            "refusing to purge without --yes: nobody is at a terminal to confirm", EXIT_USAGE
        )
    return asyncio.run(_run(args, settings, queue, since))


async def _run(
    args: argparse.Namespace, settings: Settings, queue: str | None, since: datetime | None
) -> int:
    import aiormq

    from hookpipe.errors import HookpipeError

    try:
        async with interruptible() as stop:
            match args.action:
                case "list":
                    return await _list(settings, queue, args.json, stop)
                case "show":
                    assert queue is not None
                    return await _show(settings, queue, args, stop)
                case "replay":
                    assert queue is not None
                    return await _replay(args, settings, queue, since, stop)
                case "purge":
                    assert queue is not None
                    return await _purge(settings, queue, args.older_than, args.yes, stop)
    except HookpipeError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except BrokenPipeError:
        # The reader of our output went away (`... --json | head -1`): stop there, quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail("the output was closed; stopped (what was not moved stays in the DLQ)", 1)
    except (OSError, RuntimeError, aiormq.exceptions.AMQPError) as exc:
        # The broker went away mid-operation; what the command held went back to the DLQ.
        return _fail(f"the broker connection failed: {type(exc).__name__}: {exc}", EXIT_FAILED)
    raise AssertionError(f"unknown action {args.action}")


# --- list ------------------------------------------------------------------------------------


async def _list(settings: Settings, queue: str | None, as_json: bool, stop: asyncio.Event) -> int:
    from hookpipe.workers.dlq_ops import list_dlqs

    summaries = await list_dlqs(settings, [queue] if queue else None, stop=stop)
    now = datetime.now(UTC)
    if as_json:
        for summary in summaries:
            print_json(_summary_json(summary, now))
    else:
        width = max((len(s.dlq) for s in summaries), default=3)
        print(f"{'DLQ':<{width}}  {'MESSAGES':>8}  OLDEST")
        for summary in summaries:
            oldest = "-"
            if summary.busy:
                oldest = "? (another dlq command is reading it)"
            elif summary.oldest_failed_at is not None:
                oldest = f"{human_age(now - summary.oldest_failed_at)} ago"
            print(f"{summary.dlq:<{width}}  {summary.messages:>8}  {oldest}")
    if stop.is_set():
        return _fail("interrupted; the DLQs are as they were", EXIT_INTERRUPTED)
    return EXIT_OK


def _summary_json(summary: DlqSummary, now: datetime) -> dict[str, Any]:
    from hookpipe.workers.dlq_letter import iso

    oldest = summary.oldest_failed_at
    return {
        "queue": summary.queue,
        "dlq": summary.dlq,
        "kind": "unrouted" if summary.dlq == c.UNROUTED_QUEUE else "dlq",
        "messages": summary.messages,
        "oldest_failed_at": iso(oldest),
        "oldest_age_seconds": None if oldest is None else round((now - oldest).total_seconds(), 3),
        "busy": summary.busy,
    }


# --- show ------------------------------------------------------------------------------------


async def _show(
    settings: Settings, queue: str, args: argparse.Namespace, stop: asyncio.Event
) -> int:
    from hookpipe.workers.dlq_letter import letters_queue
    from hookpipe.workers.dlq_ops import show

    total, letters = await show(settings, queue, args.limit, stop=stop)
    if stop.is_set():
        return _fail("interrupted; the DLQ is as it was", EXIT_INTERRUPTED)
    now = datetime.now(UTC)
    reveal, as_json = args.reveal, args.json
    if as_json:
        for position, letter in enumerate(letters, 1):
            print_json(letter_json(letter, position, reveal=reveal))
        return EXIT_OK
    dlq = letters_queue(queue)
    if not letters:
        print(f"{dlq} is empty")
        return EXIT_OK
    print(f"{dlq}: {total} message(s), showing {len(letters)}")
    for position, letter in enumerate(letters, 1):
        print()
        print(_letter_block(letter, position, now, reveal=reveal))
    return EXIT_OK


def letter_json(letter: DeadLetter, position: int, *, reveal: bool = False) -> dict[str, Any]:
    """A dead letter as `show --json` prints it."""
    from hookpipe.workers.dlq_letter import iso, jsonable, shown_body

    return {
        "position": position,
        "dlq": letter.dlq,
        "queue": letter.queue,
        "message_id": letter.message_id,
        "provider": letter.provider,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "dead_lettered_by": letter.dead_lettered_by,
        "error_type": letter.error_type,
        "error": letter.error,
        "attempts": letter.attempts,
        "first_failure": iso(letter.first_failure),
        "last_failure": iso(letter.last_failure),
        "worker": letter.worker,
        "replay_count": letter.replay_count,
        "replayed_at": iso(letter.replayed_at),
        "replayed_error": letter.replayed_error,
        "received_at": iso(letter.received_at),
        "request_id": letter.request_id,
        "timestamp": iso(letter.timestamp),
        "headers": jsonable(dict(letter.headers)),
        "body_bytes": len(letter.body),
        "body": shown_body(letter.body, reveal=reveal),
    }


def _letter_block(letter: DeadLetter, position: int, now: datetime, *, reveal: bool) -> str:
    from hookpipe.workers.dlq_letter import shown_body

    def when(moment: datetime | None) -> str:
        if moment is None:
            return "-"
        return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({human_age(now - moment)} ago)"

    reason = ": ".join(p for p in (letter.error_type, letter.error) if p) or "(no reason recorded)"
    attempts = "-" if letter.attempts is None else str(letter.attempts)
    lines = [
        f"#{position}  {letter.message_id or '(no message id)'}  "
        f"{letter.event_type or '(no type)'}",
        f"  reason:        {reason}",
        f"  attempts:      {attempts}",
        f"  first failure: {when(letter.first_failure)}",
        f"  last failure:  {when(letter.last_failure)}",
        f"  worker:        {letter.worker or '-'}",
        f"  replayed:      {letter.replay_count} time(s)"
        + (f", last {when(letter.replayed_at)}" if letter.replayed_at else ""),
    ]
    if letter.replayed_error:
        lines.append(f"  before replay: {letter.replayed_error}")
    if letter.dlq == c.UNROUTED_QUEUE:
        lines.append(f"  routing key:   {letter.queue or '-'}")
    elif letter.queue != letter.dlq.removesuffix(c.DLQ_SUFFIX):
        lines.append(f"  origin queue:  {letter.queue}")
    body = shown_body(letter.body, reveal=reveal)
    text = (
        body if isinstance(body, str) else orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    )
    lines.append("  body" + (" (as received):" if reveal else " (personal data masked):"))
    lines.extend("    " + line for line in text.splitlines() or [""])
    return "\n".join(lines)


# --- replay ----------------------------------------------------------------------------------


async def _replay(
    args: argparse.Namespace,
    settings: Settings,
    queue: str,
    since: datetime | None,
    stop: asyncio.Event,
) -> int:
    from hookpipe.workers.dlq_ops import replay
    from hookpipe.workers.dlq_select import ReplayFilter

    progress = Progress(sys.stderr) if sys.stderr.isatty() and not args.json else None

    def on_step(step: ReplayStep) -> None:
        if args.json:
            print_json(_step_json(step))
        elif progress is not None:
            done = step.position / max(step.total, 1)
            progress.update(step.action, done, f"{step.position}/{step.total}")

    try:
        report = await replay(
            settings,
            queue,
            ReplayFilter(args.event_type, since, args.limit),
            rate=args.rate,
            dry_run=args.dry_run,
            stop=stop,
            on_step=on_step,
        )
    finally:
        if progress is not None:
            progress.close()
    return finish_replay(
        report,
        command="dlq",
        as_json=args.json,
        summary=lambda: _report_json(report),
        line=lambda: _report_line(report),
        errors=report.errors,
    )


def _step_json(step: ReplayStep) -> dict[str, Any]:
    letter = step.letter
    return {
        "position": step.position,
        "action": step.action,
        "reason": step.reason,
        "message_id": letter.message_id,
        "event_type": letter.event_type,
        "queue": letter.queue,
    }


def _report_json(report: ReplayReport) -> dict[str, Any]:
    return {
        "dlq": report.dlq,
        "total": report.total,
        "scanned": report.scanned,
        "moved": report.moved,
        "would_move": report.would_move,
        "kept": report.kept,
        "no_handler": report.no_handler,
        "failed": report.failed,
        "not_scanned": report.not_scanned,
        "dry_run": report.dry_run,
        "interrupted": report.interrupted,
        "errors": report.errors,
    }


def _report_line(report: ReplayReport) -> str:
    if report.dry_run:
        done = f"dry run: {report.would_move} would move, {report.kept} would stay"
    else:
        done = f"moved {report.moved}, kept {report.kept}, failed {report.failed}"
    line = f"{report.dlq}: {done} ({report.scanned} of {report.total} looked at)"
    if report.no_handler:
        line += (
            f"; {report.no_handler} kept for want of a handler for their event type (they stay"
            f" in {report.dlq} until one exists)"
        )
    if report.interrupted:
        line += f"; interrupted, {report.not_scanned} not looked at stay in the DLQ"
    return line


# --- purge -----------------------------------------------------------------------------------


async def _purge(
    settings: Settings,
    queue: str,
    older_than: timedelta | None,
    yes: bool,
    stop: asyncio.Event,
) -> int:
    from hookpipe.workers.dlq_letter import letters_queue
    from hookpipe.workers.dlq_ops import purge

    dlq = letters_queue(queue)

    async def confirm(count: int) -> bool:
        if yes:
            return True
        which = f" that failed more than {human_age(older_than)} ago" if older_than else ""
        return await _ask(f"Delete {count} message(s){which} from {dlq}? [y/N] ", stop)

    report = await purge(settings, queue, older_than=older_than, confirm=confirm, stop=stop)
    if stop.is_set() and not report.removed:
        return _fail(f"interrupted; nothing deleted from {dlq}", EXIT_INTERRUPTED)
    if not report.confirmed:
        print(f"{dlq}: nothing deleted")
        return EXIT_FAILED
    kept = f", kept {report.kept}" if older_than is not None else ""
    print(f"{dlq}: deleted {report.removed}{kept}")
    return EXIT_OK


async def _ask(question: str, stop: asyncio.Event) -> bool:
    """Ask on the terminal without blocking the event loop (the broker's heartbeats go on)."""
    print(question, end="", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, readable.set)
    try:
        waiters = {asyncio.create_task(readable.wait()), asyncio.create_task(stop.wait())}
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    finally:
        loop.remove_reader(fd)
    if stop.is_set():
        print(file=sys.stderr)
        return False
    return sys.stdin.readline().strip().lower() in ("y", "yes")


# --- helpers ---------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    print(f"hookpipe dlq: {message}", file=sys.stderr)
    return code
