"""`python -m bench.archive_window`: a window read out of an archive of 1,000,000 webhooks.

The broker's stream timestamps are when it appended each chunk, by its own clock: they cannot be
set by a publisher. So the archive is filled the way time would fill it, compressed: --hours
bursts of webhooks (each an "hour", 1,000,000 / 168 = 5,952 webhooks for a week of them), each
webhook stamped with its real receipt time as the ingress stamps it, the bursts --gap seconds
apart. Between two bursts lies more than the read's end bound (the publish timeout, 1 s here,
plus a second of clock skew), as an hour of real time does.

Then it measures, in its own vhost (removed at the end):
- the read of one burst's window (`events list --since --until`): time, webhooks read;
- the same window read from the stream's start, without the seek, for comparison;
- `events export` of the whole archive, and a real `events replay` of one window: peak RSS
  of each process (os.wait4), to show it stays that of `events list`.

Prints the figures and writes them as JSON to --out. About 10 minutes for a million.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pamqp.commands import Basic

from bench.procs import hookpipe_argv
from bench.resources import vhost
from hookpipe import constants as c
from hookpipe import topology
from hookpipe.settings import Settings, to_env
from hookpipe.workers.archive import ReadStats, Selection, from_ms, read
from hookpipe.workers.ledger import Ledger

WINDOW_OUTSTANDING = 500  # confirms in flight while filling
QUEUE = "jodo.order.payment.debited"


async def fill(settings: Settings, events: int, hours: int, gap: float) -> list[tuple[int, int]]:
    """Publish `events` webhooks in `hours` bursts; each burst's (first, last) receipt ms."""
    import aio_pika

    connection = await aio_pika.connect(settings.amqp_url)
    windows: list[tuple[int, int]] = []
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel, settings, force=True)
        underlay = await channel.get_underlay_channel()
        per_hour = events // hours
        sent = 0
        for hour in range(hours):
            count = per_hour if hour < hours - 1 else events - sent
            first = last = 0
            pending: set[asyncio.Future[Any]] = set()
            for index in range(count):
                now = time.time_ns() // 1_000_000
                first = first or now
                last = now
                event_id = f"h{hour}-{index}"
                body = b'{"event_id":"%s","order_id":"o-%d","amount":"10.00"}' % (
                    event_id.encode(),
                    sent + index,
                )
                properties = Basic.Properties(
                    delivery_mode=2,
                    message_id=f"jodo:{event_id}",
                    message_type="order.payment.debited",
                    headers={
                        c.HEADER_RECEIVED_AT: now,
                        c.HEADER_PROVIDER: "jodo",
                        c.HEADER_EVENT_ID: event_id,
                        c.HEADER_ATTEMPT: 0,
                    },
                )
                # To the archive and the Jodo queue, which is purged after each burst, so that
                # only the stream keeps a million.
                pending.add(
                    asyncio.ensure_future(
                        underlay.basic_publish(
                            body,
                            exchange=c.ACCEPTED_EXCHANGE,
                            routing_key=QUEUE,
                            properties=properties,
                        )
                    )
                )
                if len(pending) >= WINDOW_OUTSTANDING:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending)
            sent += count
            windows.append((first, last))
            await underlay.queue_purge(QUEUE)
            print(f"hour {hour + 1}/{hours}: {sent} archived", file=sys.stderr, flush=True)
            await asyncio.sleep(gap)
    return windows


async def window_read(settings: Settings, selection: Selection, **bounds: Any) -> dict[str, Any]:
    stats = ReadStats()
    started = time.perf_counter()
    matched = 0
    async for _ in read(settings, selection, stats=stats, **bounds):
        matched += 1
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "read": stats.read,
        "matched": matched,
        "seek": stats.seek,
        "stopped_by": stats.stopped_by,
        "offsets": [stats.first_offset, stats.last_offset],
    }


def peak_rss(settings: Settings, *args: str) -> dict[str, Any]:
    """Run `hookpipe ARGS`, stdout to /dev/null; its time and peak RSS in MB.

    The peak is the process's own high-water mark (VmHWM in /proc/PID/status), read every 50 ms
    until it exits. Not os.wait4's ru_maxrss: Linux keeps that across the exec, so it reports
    this process's size at the fork whenever that is the larger.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPIPE_")}
    env.update(to_env(settings))
    env["HOOKPIPE_LOG_FORMAT"] = "json"
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(
            hookpipe_argv(*args), env=env, stdout=devnull, stderr=subprocess.PIPE
        )
        errors: list[bytes] = []
        stream = process.stderr
        assert stream is not None
        reader = threading.Thread(target=lambda: errors.append(stream.read()))
        reader.start()
        peak_kb = 0
        while process.poll() is None:
            peak_kb = max(peak_kb, _high_water_kb(process.pid))
            time.sleep(0.05)
        reader.join()
    err = b"".join(errors).decode()
    if process.returncode != 0:
        raise RuntimeError(f"hookpipe {' '.join(args)} exited {process.returncode}: {err}")
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "stderr": err.strip().splitlines()[-1:],
    }


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set so far, in KB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    name = f"hookpipe-bench-archive-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"events": args.events, "hours": args.hours, "gap_s": args.gap}
    async with contextlib.AsyncExitStack() as stack:
        url = args.url or await stack.enter_async_context(vhost(name))
        workdir = Path(args.workdir or f"/tmp/{name}")
        workdir.mkdir(parents=True, exist_ok=True)
        settings = dataclasses.replace(
            Settings(),
            amqp_url=url,
            publish_timeout=1.0,
            ledger_url=f"sqlite:///{workdir / 'ledger.sqlite3'}",
        )
        async with await Ledger.open(settings.ledger_url):
            pass
        started = time.perf_counter()
        windows = await fill(settings, args.events, args.hours, args.gap)
        results["fill_seconds"] = round(time.perf_counter() - started, 1)
        middle = windows[len(windows) // 2]
        since, until = from_ms(middle[0]), from_ms(middle[1] + 1)
        selection = Selection(since=since, until=until)
        results["window"] = [since.isoformat(), until.isoformat()]
        results["list_window"] = await window_read(settings, selection)
        results["list_window_again"] = await window_read(settings, selection)
        # The same webhooks, read from the start of the stream: what the seek saves.
        results["from_first"] = await window_read(settings, Selection(until=until), to_offset=None)
        cli = peak_rss(
            settings, "events", "list", "--since", since.isoformat(), "--until", until.isoformat()
        )
        results["list_cli"] = cli
        first = from_ms(windows[0][0] - 5000).isoformat()
        results["export_all"] = peak_rss(settings, "events", "export", "--since", first)
        # A real replay of one window, to its handled queue (purged after); RSS as export's.
        results["replay_window"] = peak_rss(
            settings,
            "events",
            "replay",
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
            "--wait",
            "0",
        )
    results["finished"] = datetime.now(UTC).isoformat()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.archive_window", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=168, help="bursts (default: a week's hours)")
    parser.add_argument("--gap", type=float, default=2.5, help="seconds between bursts")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--url", default=None, help="an empty vhost's URL to use (default: one of its own)"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args))
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
