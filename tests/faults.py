"""Faults under steady load, as processes: `python -m tests.faults FAULT [--seconds N] [--rate R]`.

Starts `hookpipe ingress` and `hookpipe worker` (a RabbitMQ vhost and a ledger of their own, the
fake DreamClass API of tests/dreamclass_fake.py), sends Jodo and DreamClass webhooks at a steady
rate, and in the middle of it brings on one fault for N seconds:

- dreamclass-hang: the DreamClass API stops answering (SQLite ledger);
- db-blackhole: the ledger's PostgreSQL goes silent behind a TcpProxy (`--cut`: its connections
  drop and new ones are refused instead);
- disk-full: the SQLite ledger's filesystem (a tmpfs of its own) fills up.

The load goes on for a while after the fault, then stops; the run waits until every webhook
answered 200 is in the ledger, and prints the figures: answers, events applied, applied twice,
what is left in the DLQs, how long the backlog took to drain, each provider's latency from
receipt to ledger before, during and after the fault, the worker's failure counters and the
warnings and errors of its log. See docs/resilience.md for runs and their figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aio_pika
import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from tests.attack import wait_ready as wait_ingress_ready
from tests.conftest import PROVIDER_SECTIONS, guest_vhost, new_pg_database, queue_depth
from tests.dreamclass_fake import FakeDreamClass, Kind
from tests.ingress_support import dreamclass_body, fresh_jodo
from tests.tcp_proxy import TcpProxy
from tests.worker_support import free_port, header, subprocess_env

FAULTS = ("dreamclass-hang", "db-blackhole", "disk-full")
PHASES = ("before", "during", "after")
# Longer than any run: a hung API call ends when the hang does (FakeDreamClass.stop_waiting).
HANG_FOREVER = 3600.0
# Requests the fake holds during a hang: the breaker lets a few through a minute, so plenty.
HUNG_REQUESTS = 10_000


@dataclass(frozen=True)
class Options:
    fault: str
    seconds: float
    rate: float
    dreamclass_share: float
    warmup: float
    after: float
    drain_timeout: float
    cut: bool
    ledger_timeout: float
    disk_mb: int


@dataclass
class Sent:
    """One webhook sent: whose, the event id as the ledger records it, when, and its answer."""

    provider: str
    ledger_id: str
    at: float  # wall clock, seconds
    status: int  # 0: no answer (connection error or timeout)
    seconds: float  # POST to answer


class Fault(Protocol):
    async def begin(self) -> None: ...
    async def end(self) -> None: ...


class DreamClassHang:
    """Every DreamClass API request waits until the hang ends."""

    def __init__(self, fake: FakeDreamClass) -> None:
        self.fake = fake

    async def begin(self) -> None:
        kinds: tuple[Kind, ...] = ("invoice", "payment_methods")
        for kind in kinds:
            self.fake.script(kind, delay=HANG_FOREVER, times=HUNG_REQUESTS)

    async def end(self) -> None:
        # Every held request is answered normally now, and so are the scripts left over.
        self.fake.stop_waiting()


class DatabaseBlackHole:
    """The ledger's connections through `proxy` pass no byte (or, `cut`, are dropped)."""

    def __init__(self, proxy: TcpProxy, cut: bool) -> None:
        self.proxy = proxy
        self.cut = cut

    async def begin(self) -> None:
        if self.cut:
            await self.proxy.cut()
        else:
            self.proxy.freeze()

    async def end(self) -> None:
        if self.cut:
            self.proxy.restore()
        else:
            self.proxy.thaw()


class DiskFull:
    """A file that takes every free block of the ledger's filesystem, removed at the end."""

    def __init__(self, folder: Path) -> None:
        self.filler = folder / "filler"
        self.filled_bytes = 0

    async def begin(self) -> None:
        self.filled_bytes = await asyncio.to_thread(self._fill)

    def _fill(self) -> int:
        written = 0
        chunk = b"\0" * 4096
        with self.filler.open("wb", buffering=0) as file:
            while True:
                try:
                    written += file.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return written

    async def end(self) -> None:
        self.filler.unlink()


# ---------------------------------------------------------------------------------------------
# The load


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    provider: str,
    request: tuple[bytes, dict[str, str]],
    ledger_id: str,
    sent: list[Sent],
) -> None:
    body, headers = request
    at, started = time.time(), time.perf_counter()
    try:
        async with session.post(
            f"{url}/webhooks/{provider}",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        ) as answer:
            await answer.read()
            status = answer.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    sent.append(Sent(provider, ledger_id, at, status, time.perf_counter() - started))


def _dreamclass_webhook(fake: FakeDreamClass, number: int) -> tuple[bytes, str]:
    """A PAYMENT_CREATED of payment `number` on invoice `number`, which the fake lists; and the
    event id the ledger records it under. A payment per event: a second apply would show."""
    event_id = str(uuid.uuid4())
    fake.add_payment(number, number)
    body = (
        dreamclass_body(event_id=event_id)
        .replace(b'"id": 5,', f'"id": {number},'.encode())
        .replace(b'"invoiceId": 16', f'"invoiceId": {number}'.encode())
    )
    return body, f"{event_id}:PAYMENT_CREATED"


async def send_load(
    url: str,
    fake: FakeDreamClass | None,
    rate: float,
    dreamclass_share: float,
    stop: asyncio.Event,
    sent: list[Sent],
) -> None:
    """Webhooks at `rate` a second, every k-th a DreamClass one (its invoice in `fake`), until
    `stop`; an answer is not waited for before the next is sent (providers do not wait for each
    other either)."""
    every = max(1, round(1 / dreamclass_share)) if dreamclass_share else 0
    run = uuid.uuid4().hex[:8]
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = loop.time()
        number = 0
        while not stop.is_set():
            number += 1
            await asyncio.sleep(max(0.0, started + number / rate - loop.time()))
            request: tuple[bytes, dict[str, str]]
            if fake is not None and every and number % every == 0:
                body, ledger_id = _dreamclass_webhook(fake, number)
                provider, request = "dreamclass", (body, {})
            else:
                ledger_id = str(uuid.uuid4())
                provider, request = "jodo", fresh_jodo(ledger_id, f"order_{run}_{number}")
            task = asyncio.create_task(_post(session, url, provider, request, ledger_id, sent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


# ---------------------------------------------------------------------------------------------
# What the ledger, the broker and the worker say afterwards


@dataclass(frozen=True)
class Applied:
    provider: str
    event_id: str
    received_at: float | None  # seconds, the ingress's clock
    applied_at: float


async def ledger_contents(ledger_url: str) -> tuple[list[Applied], list[list[str]]]:
    """Every processed event, and every payment's list of applied event ids."""
    events_sql = "SELECT provider, event_id, received_at_ms, applied_at FROM processed_events"
    payments_sql = "SELECT events FROM payments"
    if ledger_url.startswith("sqlite:///"):
        path = ledger_url.removeprefix("sqlite:///")

        def read() -> tuple[list[Any], list[Any]]:
            with contextlib.closing(sqlite3.connect(path)) as db:
                return db.execute(events_sql).fetchall(), db.execute(payments_sql).fetchall()

        event_rows, payment_rows = await asyncio.to_thread(read)
    else:
        connection = await asyncpg.connect(ledger_url)
        try:
            event_rows = await connection.fetch(events_sql)
            payment_rows = await connection.fetch(payments_sql)
        finally:
            await connection.close()

    def seconds(value: Any) -> float:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        return moment.timestamp()

    applied = [
        Applied(row[0], row[1], None if row[2] is None else row[2] / 1000, seconds(row[3]))
        for row in event_rows
    ]
    return applied, [orjson.loads(row[0]) for row in payment_rows]


async def wait_drained(
    channel: aio_pika.abc.AbstractChannel,
    ledger_url: str,
    expected: set[tuple[str, str]],
    queues: Sequence[str],
    within: float,
    alive: Callable[[], None],
) -> float | None:
    """When (wall clock) every expected event was applied and `queues` were empty; None if that
    did not happen `within` seconds. `alive` raises when a process the drain needs is gone."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive()
        applied, _ = await ledger_contents(ledger_url)
        if expected <= {(a.provider, a.event_id) for a in applied}:
            depths = [await queue_depth(channel, q) for q in queues]
            if not any(depths):
                return time.time()
        await asyncio.sleep(2)
    return None


async def dead_letters(channel: aio_pika.abc.AbstractChannel) -> Counter[str]:
    """What every DLQ holds, by queue, error type and error (the DLQs are emptied)."""
    found: Counter[str] = Counter()
    for name in handled_queues():
        queue = await channel.get_queue(topology.dlq_name(name), ensure=False)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            why = [header(message, h) for h in (c.HEADER_ERROR_TYPE, c.HEADER_ERROR)]
            found[f"{name}: {': '.join(why)}"] += 1
    return found


async def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The worker's metrics: {sample name: {labels: value}}."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def _by(samples: dict[tuple[tuple[str, str], ...], float], *keys: str) -> dict[str, int]:
    """Counter samples summed by some of their labels (the queue label as its provider)."""
    sums: Counter[str] = Counter()
    for labels, value in samples.items():
        named = dict(labels)
        named["queue"] = named.get("queue", "").partition(".")[0]
        sums[" ".join(named.get(k, "") for k in keys)] += int(value)
    return {k: v for k, v in sorted(sums.items()) if v}


def _handlers_longer_than(
    buckets: dict[tuple[tuple[str, str], ...], float],
) -> dict[str, int]:
    """Handler runs longer than each bucket bound of 1 s and more, all queues together."""
    totals: Counter[str] = Counter()
    for labels, value in buckets.items():
        totals[dict(labels)["le"]] += int(value)
    infinite = totals["+Inf"]
    return {
        f">{float(le):g}s": infinite - n
        for le, n in totals.items()
        if le != "+Inf" and float(le) >= 1
    }


def log_summary(path: Path, begun: float) -> dict[str, Any]:
    """A process's warnings and errors by message, tracebacks, lines that are not JSON, and
    the warnings and errors of each 10 s from `begun` on."""
    levels: Counter[str] = Counter()
    timeline: Counter[int] = Counter()
    tracebacks: list[str] = []
    not_json: list[str] = []
    firsts: dict[str, dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            not_json.append(line)
            continue
        level = record.get("level", "")
        if "exception" in record:
            tracebacks.append(line)
        if level in ("warning", "error", "critical"):
            at = datetime.fromisoformat(record["timestamp"]).timestamp()
            timeline[int((at - begun) // 10)] += 1
            what = f"{level}: {record.get('event')}"
            if record.get("error_type"):
                what += f" [{record['error_type']}]"
            levels[what] += 1
            firsts.setdefault(what, record)
    return {
        "warnings_and_errors": dict(levels.most_common()),
        "first_of_each": firsts,
        "tracebacks": tracebacks[:3],
        "traceback_count": len(tracebacks),
        "not_json": not_json[:3],
        "timeline": [
            timeline[n] for n in range(min(timeline, default=0), max(timeline, default=-1) + 1)
        ],
        "timeline_from": min(timeline, default=0) * 10,
    }


# ---------------------------------------------------------------------------------------------
# The figures


def p50_p99_max(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * 1000:.0f}"
    p = statistics.quantiles(values, n=100, method="inclusive")
    return f"{statistics.median(values) * 1000:.0f}/{p[98] * 1000:.0f}/{max(values) * 1000:.0f}"


def _phase(at: float, begun: float, ended: float) -> str:
    return "before" if at < begun else "during" if at < ended else "after"


def figures(
    options: Options,
    sent: list[Sent],
    applied: list[Applied],
    payments: list[list[str]],
    times: dict[str, float | None],
) -> list[str]:
    """The report's lines."""
    begun, ended = times["fault_begun"], times["fault_ended"]
    assert begun is not None and ended is not None
    answered = {(s.provider, s.ledger_id) for s in sent if s.status == 200}
    done = {(a.provider, a.event_id) for a in applied}
    # Each webhook is the only event of a payment of its own: a payment listing two is one
    # webhook applied twice (the ledger's record of processed events cannot show it).
    twice = sum(len(events) - 1 for events in payments if len(events) > 1)
    statuses = Counter(s.status for s in sent)
    providers = Counter(s.provider for s in sent)
    lines = [
        f"{options.fault}{' (cut)' if options.cut else ''}: {options.seconds:g} s fault, "
        f"{options.rate:g} webhooks/s for {options.warmup:g} s before, during, and "
        f"{options.after:g} s after",
        f"sent {len(sent)} ({', '.join(f'{p} {n}' for p, n in sorted(providers.items()))}); "
        f"answers {dict(sorted(statuses.items()))}",
        f"applied {len(done & answered)} of {len(answered)} answered 200; "
        f"missing {len(answered - done)}; applied twice {twice}; "
        f"applied though not answered 200: {len(done - answered)}",
    ]
    drained = times["drained"]
    before_end = [a.applied_at for a in applied if (a.received_at or 0) < ended]
    lines.append(
        "drain: events received by the fault's end all applied "
        f"{max(before_end) - ended:.1f} s after it; everything applied and the queues empty "
        + (f"{drained - ended:.1f} s after it" if drained else "NOT within the drain timeout")
    )
    latency: dict[tuple[str, str], list[float]] = {}
    for a in applied:
        if a.received_at is not None:
            phase = _phase(a.received_at, begun, ended)
            latency.setdefault((a.provider, phase), []).append(a.applied_at - a.received_at)
    posts: dict[str, list[float]] = {}
    for s in sent:
        posts.setdefault(_phase(s.at, begun, ended), []).append(s.seconds)
    lines.append("latency, ms p50/p99/max      " + "".join(f"{p:>22}" for p in PHASES))
    for provider in sorted(providers):
        row = "".join(f"{p50_p99_max(latency.get((provider, p), [])):>22}" for p in PHASES)
        lines.append(f"  {provider + ' receipt->ledger':<27}{row}")
    lines.append(
        f"  {'POST->answer':<27}" + "".join(f"{p50_p99_max(posts.get(p, [])):>22}" for p in PHASES)
    )
    return lines


# ---------------------------------------------------------------------------------------------
# The run


@contextlib.contextmanager
def small_filesystem(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted on folder/disk (root only), unmounted on leaving."""
    mount = folder / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


async def declare_topology(env: dict[str, str]) -> None:
    """`hookpipe topology declare` with this environment, as an operator runs it."""
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hookpipe.cli", "topology", "declare"],
        env=env,
        check=True,
        capture_output=True,
    )


def start_process(
    folder: Path, name: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hookpipe.cli", *args],
        env=env,
        stderr=(folder / f"{name}.log").open("w"),
    )


def check_alive(folder: Path, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop the run, saying why, when the ingress or the worker has exited."""
    for name, process in processes.items():
        if process.poll() is not None:
            last = (folder / f"{name}.log").read_text(errors="replace").splitlines()[-1:]
            raise SystemExit(f"the {name} exited ({process.returncode}): {' '.join(last)}")


async def wait_worker_started(folder: Path, processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Until the worker logs that it consumes (a busy broker can take it seconds to answer)."""
    for _ in range(1200):
        check_alive(folder, processes)
        if b'"worker started"' in (folder / "worker.log").read_bytes():
            return
        await asyncio.sleep(0.1)
    raise SystemExit("the worker did not start within 120 s")


def stop_processes(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run(
    options: Options, amqp_url: str, ledger_url: str, folder: Path, fault_folder: Path | None
) -> list[str]:
    """Start everything, run the load and the fault, wait for the drain; the report's lines."""
    fake = FakeDreamClass()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    proxy = TcpProxy(*_pg_address(ledger_url)) if options.fault == "db-blackhole" else None
    worker_ledger_url = ledger_url
    if proxy is not None:
        await proxy.start()
        worker_ledger_url = proxy.url_for(ledger_url)
    metrics_port, port = free_port(), free_port()
    settings = fake.settings(
        Settings(
            amqp_url=amqp_url,
            ledger_url=worker_ledger_url,
            ledger_timeout=options.ledger_timeout,
            worker_metrics_port=metrics_port,
            sections=PROVIDER_SECTIONS,
        )
    )
    # The ingress's outage spool in a folder of the run's own: in the default var/spool another
    # ingress on this machine would publish its webhooks into its own broker, or the other way.
    env = subprocess_env(settings, HOOKPIPE_SPOOL_DIR=str(folder / "spool"))
    await declare_topology(env)
    fault: Fault
    if options.fault == "dreamclass-hang":
        fault = DreamClassHang(fake)
    elif proxy is not None:
        fault = DatabaseBlackHole(proxy, options.cut)
    else:
        assert fault_folder is not None
        fault = DiskFull(fault_folder)
    processes = {
        "ingress": start_process(
            folder, "ingress", ["ingress", "--host", "127.0.0.1", "--port", str(port)], env
        ),
        "worker": start_process(folder, "worker", ["worker"], env),
    }
    url = f"http://127.0.0.1:{port}"
    sent: list[Sent] = []
    times: dict[str, float | None] = {}
    connection = None
    try:
        connection = await aio_pika.connect_robust(
            amqp_url, client_properties={"connection_name": "faults@hookpipe"}
        )
        await wait_ingress_ready(url)
        await wait_worker_started(folder, processes)
        stop = asyncio.Event()
        load = asyncio.create_task(
            send_load(url, fake, options.rate, options.dreamclass_share, stop, sent)
        )
        await asyncio.sleep(options.warmup)
        times["fault_begun"] = time.time()
        await fault.begin()
        print(f"fault begun at +{options.warmup:g} s", file=sys.stderr, flush=True)
        await asyncio.sleep(options.seconds)
        await fault.end()
        times["fault_ended"] = time.time()
        print("fault ended", file=sys.stderr, flush=True)
        await asyncio.sleep(options.after)
        stop.set()
        await load
        times["load_ended"] = time.time()
        channel = await connection.channel()
        retry_queues = [
            topology.retry_queue_name(d) for d in topology.retry_delays_ms(settings.retry)
        ]
        expected = {(s.provider, s.ledger_id) for s in sent if s.status == 200}
        times["drained"] = await wait_drained(
            channel,
            ledger_url,
            expected,
            [*handled_queues(), *retry_queues],
            options.drain_timeout,
            functools.partial(check_alive, folder, processes),
        )
        metrics = await scrape(metrics_port)
        applied, payments = await ledger_contents(ledger_url)
        dlq_depth = {
            name: depth
            for name in handled_queues()
            if (depth := await queue_depth(channel, topology.dlq_name(name)))
        }
        letters = await dead_letters(channel)
    finally:
        if connection is not None:
            await connection.close()
        # In a thread: a worker that stops closes its ledger through the proxy, in this loop.
        await asyncio.to_thread(stop_processes, list(processes.values()))
        if proxy is not None:
            await proxy.close()
        fake.stop_waiting()
        await server.close()
    lines = figures(options, sent, applied, payments, times)
    begun = times["fault_begun"]
    assert begun is not None
    lines.append(f"DLQ depth at the end: {sum(dlq_depth.values())} {dlq_depth or ''}")
    lines.extend(f"  {n} x {what}" for what, n in letters.most_common())
    if isinstance(fault, DiskFull):
        lines.append(f"the filler took {fault.filled_bytes / 1e6:.1f} MB")
    if isinstance(fault, DreamClassHang):
        lines.append(f"DreamClass API requests: {len(fake.requests)}")
    lines.append(
        "worker: processed "
        f"{_by(metrics.get('hookpipe_worker_processed_total', {}), 'queue')}, retried "
        f"{_by(metrics.get('hookpipe_worker_retried_total', {}), 'queue')}, dead-lettered "
        f"{_by(metrics.get('hookpipe_worker_dead_lettered_total', {}), 'queue')}"
    )
    lines.append(
        "  hookpipe_worker_failures_total: "
        f"{_by(metrics.get('hookpipe_worker_failures_total', {}), 'queue', 'error_type')}"
    )
    lines.append(
        "  handler runs longer than: "
        f"{_handlers_longer_than(metrics.get('hookpipe_worker_handler_seconds_bucket', {}))}"
    )
    for name in ("worker", "ingress"):
        summary = log_summary(folder / f"{name}.log", begun)
        lines.append(
            f"{name} log: tracebacks {summary['traceback_count']}, not JSON "
            f"{len(summary['not_json'])}; warnings and errors a 10 s from "
            f"{summary['timeline_from']:+d} s of the fault's start: {summary['timeline']}"
        )
        lines.extend(f"  {n} x {what}" for what, n in summary["warnings_and_errors"].items())
        for what, record in summary["first_of_each"].items():
            keep = {k: v for k, v in record.items() if k in ("timestamp", "error", "reason")}
            if keep.get("error") or keep.get("reason"):
                lines.append(f"    first {what}: {orjson.dumps(keep).decode()}")
        lines.extend(f"  traceback: {line[:600]}" for line in summary["tracebacks"])
    lines.append(f"logs: {folder}")
    return lines


def _pg_address(url: str) -> tuple[str, int]:
    host, _, port = url.split("@", 1)[1].split("/", 1)[0].partition(":")
    return host, int(port or 5432)


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("fault", choices=FAULTS)
    parser.add_argument("--seconds", type=float, help="how long the fault lasts (60, 90, 60)")
    parser.add_argument("--rate", type=float, default=60.0, help="webhooks a second, in all")
    parser.add_argument(
        "--dreamclass-share",
        type=float,
        default=0.2,
        help="the part of them that are DreamClass's (the API client allows 20 calls a second)",
    )
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of load after")
    parser.add_argument(
        "--drain-timeout", type=float, default=900.0, help="seconds to wait for the drain"
    )
    parser.add_argument(
        "--cut", action="store_true", help="db-blackhole: drop the connections instead"
    )
    parser.add_argument(
        "--ledger-timeout",
        type=float,
        default=10.0,
        help="HOOKPIPE_LEDGER_TIMEOUT of the worker",
    )
    parser.add_argument("--disk-mb", type=int, default=32, help="disk-full: the tmpfs's size")
    args = parser.parse_args(argv)
    default_seconds = {"dreamclass-hang": 60.0, "db-blackhole": 90.0, "disk-full": 60.0}
    return Options(
        fault=args.fault,
        seconds=args.seconds or default_seconds[args.fault],
        rate=args.rate,
        dreamclass_share=args.dreamclass_share,
        warmup=args.warmup,
        after=args.after,
        drain_timeout=args.drain_timeout,
        cut=args.cut,
        ledger_timeout=args.ledger_timeout,
        disk_mb=args.disk_mb,
    )


def main() -> None:
    options = parse(sys.argv[1:])
    folder = Path(tempfile.mkdtemp(prefix=f"hookpipe-faults-{options.fault}-"))
    with contextlib.ExitStack() as stack:
        amqp_url = stack.enter_context(guest_vhost(f"hookpipe-faults-{uuid.uuid4().hex[:8]}"))
        fault_folder = None
        if options.fault == "db-blackhole":
            ledger_url = stack.enter_context(new_pg_database())
        elif options.fault == "disk-full":
            fault_folder = stack.enter_context(small_filesystem(folder, options.disk_mb))
            ledger_url = f"sqlite:///{fault_folder / 'ledger.sqlite3'}"
        else:
            ledger_url = f"sqlite:///{folder / 'ledger.sqlite3'}"
        lines = asyncio.run(run(options, amqp_url, ledger_url, folder, fault_folder))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
