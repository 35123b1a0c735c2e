"""The measurements: each phase fills its figures, and the ceilings they are compared with.

Every figure is measured in the same run as its ceiling, on the same broker and database, with
the same load generator and message size, so that the ratio says how much of what the machine
can do hookpipe's own code leaves on the table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aio_pika import DeliveryMode

from bench import ledger_probe, payloads, peers, wrk
from bench.context import Bench, Unavailable
from bench.procs import free_port, hookpipe_argv, python_argv
from bench.report import Figure
from bench.stats import latency_summary
from hookpipe import constants as c

# The targets: the ingress's rate as a share of the bare publish loop, answer and end-to-end
# times in ms, the worker's rate on PostgreSQL, and each process's resident memory.
INGRESS_SHARE = 0.8
# The ingress's rate as a share of the least handler that verifies and publishes the same way.
HANDLER_SHARE = 0.95
INGRESS_P99_MS = 10.0
WORKER_PG_RATE = 2000.0
E2E_P99_MS = 50.0
INGRESS_RSS_MB = 80.0
WORKER_RSS_MB = 150.0
# "No growth": what a process may still gain per 100k webhooks once warm. Allocator arenas and
# caches settle in steps, so zero is not measurable; 1 MB per 100k stays under 10 MB at 1M.
GROWTH_PER_100K_MB = 1.0
# Webhooks the memory targets are stated for; the readings are extrapolated to it.
MEMORY_TARGET_EVENTS = 1_000_000
# The ingress's rate with the archive stream bound, as a share of its rate without it.
ARCHIVE_SHARE = 0.9
# Each wrk run gets events of its own; past this many requests they repeat (noted if so).
WRK_EVENTS = 60_000


def catalog() -> dict[str, Figure]:
    """Every figure of a run, empty, in the order they are printed."""

    def at_least(share: float) -> Callable[[float, float | None], bool]:
        return lambda value, ceiling: ceiling is not None and value >= share * ceiling

    def at_most(limit: float) -> Callable[[float, float | None], bool]:
        return lambda value, _: value <= limit

    def at_least_abs(limit: float) -> Callable[[float, float | None], bool]:
        return lambda value, _: value >= limit

    figures = [
        Figure(
            "ingress_rate",
            "ingress: signed webhooks confirmed, 1 process",
            "/s",
            ceiling_label="bare confirmed-publish loop",
            target_label=f">= {INGRESS_SHARE} x ceiling",
            check=at_least(INGRESS_SHARE),
        ),
        Figure(
            "ingress_rate_2p",
            "ingress: 2 processes on one port (same run)",
            "/s",
            ceiling_label="1 process",
        ),
        Figure(
            "ingress_rate_handler",
            "ingress (same run) vs a bare verify + publish handler",
            "/s",
            ceiling_label="aiohttp + HMAC + confirmed publish",
            target_label=f">= {HANDLER_SHARE} x ceiling",
            check=at_least(HANDLER_SHARE),
        ),
        Figure(
            "ingress_rate_http",
            "ingress (same run) vs a bare aiohttp 200",
            "/s",
            ceiling_label="bare aiohttp handler",
        ),
        Figure(
            "peer_rate_confirms",
            "ingress (same run) vs FastAPI + Celery, confirms",
            "/s",
            ceiling_label="FastAPI + Celery (confirms)",
        ),
        Figure(
            "peer_rate",
            "ingress (same run) vs FastAPI + Celery, no confirms",
            "/s",
            ceiling_label="FastAPI + Celery (no confirms)",
        ),
        Figure(
            "peer_p99_confirms",
            "ingress p99 at max rate vs FastAPI + Celery, confirms",
            "ms",
            ceiling_label="FastAPI + Celery (confirms)",
        ),
        Figure(
            "peer_p99",
            "ingress p99 at max rate vs FastAPI + Celery, no confirms",
            "ms",
            ceiling_label="FastAPI + Celery (no confirms)",
        ),
        Figure(
            "ingress_p50",
            "ingress p50 at half its max rate",
            "ms",
            ceiling_label="bare aiohttp, same rate",
        ),
        Figure(
            "ingress_p99",
            "ingress p99 at half its max rate",
            "ms",
            ceiling_label="bare aiohttp, same rate",
            target_label=f"<= {INGRESS_P99_MS:g} ms",
            check=at_most(INGRESS_P99_MS),
        ),
        Figure(
            "ingress_p99_publish",
            "ingress p99 (same run) vs a bare confirmed publish",
            "ms",
            ceiling_label="bare aiohttp + publish, same rate",
        ),
        Figure(
            "archive_rate",
            "ingress with the archive stream bound",
            "/s",
            ceiling_label="the same ingress, stream unbound",
            target_label=f">= {ARCHIVE_SHARE} x ceiling",
            check=at_least(ARCHIVE_SHARE),
        ),
        Figure(
            "spool_rate",
            "ingress with no broker: every webhook to the outage spool",
            "/s",
            ceiling_label="the ingress publishing (same run)",
        ),
        Figure(
            "worker_pg",
            "worker on PostgreSQL: decode + ledger + ack",
            "/s",
            ceiling_label="bare consume + ack",
            target_label=f">= {WORKER_PG_RATE:,.0f}/s",
            check=at_least_abs(WORKER_PG_RATE),
        ),
        Figure(
            "worker_pg_cpu",
            "worker CPU per message on PostgreSQL",
            "µs",
        ),
        Figure(
            "worker_sqlite",
            "worker on SQLite: decode + ledger + ack",
            "/s",
            ceiling_label="bare consume + ack",
        ),
        Figure(
            "e2e_p50",
            "end to end p50, POST to ledger commit",
            "ms",
            ceiling_label="bare publish + insert pipeline",
        ),
        Figure(
            "e2e_p99",
            "end to end p99, POST to ledger commit",
            "ms",
            ceiling_label="bare publish + insert pipeline",
            target_label=f"<= {E2E_P99_MS:g} ms",
            check=at_most(E2E_P99_MS),
        ),
        Figure(
            "ingress_rss",
            "ingress RSS after the long run",
            "MB",
            ceiling_label="bare aiohttp + publish",
            target_label=f"<= {INGRESS_RSS_MB:g} MB",
            check=at_most(INGRESS_RSS_MB),
        ),
        Figure(
            "ingress_rss_1m",
            "ingress RSS at 1M webhooks (extrapolated)",
            "MB",
            target_label=f"<= {INGRESS_RSS_MB:g} MB",
            check=at_most(INGRESS_RSS_MB),
        ),
        Figure(
            "ingress_growth",
            "ingress RSS growth per 100k webhooks",
            "MB",
            target_label=f"<= {GROWTH_PER_100K_MB:g} MB (no growth)",
            check=at_most(GROWTH_PER_100K_MB),
        ),
        Figure(
            "worker_rss",
            "worker RSS after the long run",
            "MB",
            ceiling_label="bare consume + insert",
            target_label=f"<= {WORKER_RSS_MB:g} MB",
            check=at_most(WORKER_RSS_MB),
        ),
        Figure(
            "worker_rss_1m",
            "worker RSS at 1M webhooks (extrapolated)",
            "MB",
            target_label=f"<= {WORKER_RSS_MB:g} MB",
            check=at_most(WORKER_RSS_MB),
        ),
        Figure(
            "worker_growth",
            "worker RSS growth per 100k webhooks",
            "MB",
            target_label=f"<= {GROWTH_PER_100K_MB:g} MB (no growth)",
            check=at_most(GROWTH_PER_100K_MB),
        ),
    ]
    return {fig.key: fig for fig in figures}


# ---------------------------------------------------------------------------------------------
# Ingress throughput


async def _closed_load(b: Bench, port: int, name: str) -> dict[str, Any]:
    """Maximum rate of 2xx answers: wrk when there is one, else the Python generator."""
    s = b.scale
    wrk_path = b.results.get("wrk_path")
    if wrk_path:
        script = Path(b.results["wrk_script"])
        # A warm-up run first (JIT-less Python still warms caches, pools and the broker).
        _, warm_data = wrk.write_inputs(b.workdir, b.series(), _wrk_events(b))
        await wrk.run(
            wrk_path, port, script, warm_data, seconds=s.warmup, connections=s.connections
        )
        _, data = wrk.write_inputs(b.workdir, b.series(), _wrk_events(b))
        result = await wrk.run(
            wrk_path, port, script, data, seconds=s.seconds, connections=s.connections
        )
        result["generator"] = "wrk -t1"
        result["p99_ms"] = result["p99_us"] / 1000
        return result
    closed: dict[str, Any] = await b.loadgen(
        name,
        port,
        "closed",
        b.series(),
        connections=s.connections,
        seconds=s.seconds,
        warmup=s.warmup,
        timeout=s.seconds + s.warmup + 60,
    )
    closed["ok"] = closed["statuses"].get("200", 0)
    closed["generator"] = "python closed loop (bench.loadgen)"
    closed["p99_ms"] = closed["latency_ms"]["p99"]
    return closed


def _require_answers(result: dict[str, Any], who: str) -> None:
    """Raise unless `who` answered 99 % of a load run's requests with 2xx."""
    requests = result.get("requests", result.get("sent", 0))
    if result["ok"] < 0.99 * requests:
        raise RuntimeError(f"{who} answered only {result['ok']} of {requests} requests with 2xx")


def _load_generator(b: Bench) -> str:
    """Install wrk if it is missing and can be, once per run; what the closed loads run on."""
    if "wrk" not in b.results:
        wrk_path, how = wrk.ensure_installed()
        b.results["wrk"] = how
        if wrk_path:
            b.results["wrk_path"] = wrk_path
            b.results["wrk_script"] = str(wrk.write_inputs(b.workdir, b.series(), 1)[0])
    generator = "wrk -t1" if b.results.get("wrk_path") else "python closed loop"
    return f"{b.scale.connections} connections, {generator}"


async def _ingress_rate(b: Bench, name: str) -> dict[str, Any]:
    """One ingress process's maximum rate under the closed load."""
    child, port = await b.start_ingress()
    try:
        result = await _closed_load(b, port, name)
    finally:
        b.stop(child)
        await b.purge()
    _require_answers(result, "the ingress")
    return result


def _wrk_events(b: Bench) -> int:
    return WRK_EVENTS if b.scale.seconds >= 5 else 5_000


async def ingress_throughput(b: Bench, figs: dict[str, Figure]) -> None:
    """Ingress max rate under wrk, beside a bare confirmed-publish loop and a bare aiohttp."""
    s = b.scale
    rate, rate_http = figs["ingress_rate"], figs["ingress_rate_http"]
    out = b.path("bare-publish.json")
    publish = await b.run_job(
        "bare-publish",
        python_argv(
            "bench.bare",
            "publish",
            "--url",
            b.amqp_url,
            "--seconds",
            str(s.seconds),
            "--warmup",
            str(s.warmup),
            "--concurrency",
            str(s.connections),
            "--series",
            str(b.series()),
            "--out",
            str(out),
        ),
        out,
        timeout=s.seconds + s.warmup + 60,
    )
    await b.purge()
    rate.ceiling = publish["rate"]
    b.results["bare_publish"] = publish

    note = _load_generator(b)

    child, port = await b.start_bare_http()
    try:
        http = await _closed_load(b, port, "bare-http-load")
    finally:
        b.stop(child)
    rate_http.ceiling = http["rate"]
    b.results["bare_http"] = http

    # The least code that does the ingress's job: what a request costs beyond it is ours.
    child, port = await b.start_bare_http(publish=True)
    try:
        handler = await _closed_load(b, port, "bare-handler-load")
    finally:
        b.stop(child)
        await b.purge()
    _require_answers(handler, "the bare verify + publish handler")
    figs["ingress_rate_handler"].ceiling = handler["rate"]
    b.results["bare_handler"] = handler

    result = await _ingress_rate(b, "ingress-load")
    b.results["ingress"] = result
    rate.value = rate_http.value = figs["ingress_rate_handler"].value = result["rate"]
    rate.note = rate_http.note = figs["ingress_rate_handler"].note = note
    await _two_processes(b, figs["ingress_rate_2p"], result["rate"], note)


async def _two_processes(b: Bench, fig: Figure, one: float, note: str) -> None:
    """`hookpipe ingress --processes 2` under the same load as the single process."""
    fig.ceiling = one
    child, port = await b.start_ingress(processes=2)
    try:
        result = await _closed_load(b, port, "ingress-2p-load")
    finally:
        b.stop(child)
        await b.purge()
    b.results["ingress_2p"] = result
    _require_answers(result, "2 ingress processes")
    fig.value = result["rate"]
    fig.note = f"{note}; SO_REUSEPORT, 2 cores shared with the broker and the load generator"


# ---------------------------------------------------------------------------------------------
# Ingress throughput with and without the archive stream


async def archive_throughput(b: Bench, figs: dict[str, Figure]) -> None:
    """One ingress process, its rate with the archive stream unbound and bound, alternately."""
    fig = figs["archive_rate"]
    env = b.env()
    env["HOOKPIPE_DECLARE_TOPOLOGY"] = "false"  # its declaration would bind the stream again
    port = free_port()
    argv = hookpipe_argv("ingress", "--host", "127.0.0.1", "--port", str(port))
    stream = await b.channel.get_queue(c.ARCHIVE_STREAM, ensure=False)
    accepted = await b.channel.get_exchange(c.ACCEPTED_EXCHANGE, ensure=False)
    # topology.declare binds with the queue's name as the (for a fanout, unused) routing key.
    key = c.ARCHIVE_STREAM
    child = await b.start_http("ingress-archive", argv, port, env)
    rates: dict[bool, list[float]] = {False: [], True: []}
    try:
        # Alternated, best of two each: the machine's noise drifts over a minute.
        for bound in (False, True, False, True):
            if bound:
                await stream.bind(accepted, routing_key=key)
            else:
                await stream.unbind(accepted, routing_key=key)
            result = await _closed_load(b, port, f"archive-{'on' if bound else 'off'}")
            _require_answers(result, "the ingress")
            rates[bound].append(result["rate"])
            await b.purge()
    finally:
        await stream.bind(accepted, routing_key=key)
        b.stop(child)
    b.results["archive"] = {"with": rates[True], "without": rates[False]}
    fig.value = max(rates[True])
    fig.ceiling = max(rates[False])
    fig.note = "best of two runs each, alternated"


# ---------------------------------------------------------------------------------------------
# Ingress throughput through a broker outage: the outage spool


async def spool_throughput(b: Bench, figs: dict[str, Figure]) -> None:
    """Ingress max rate with its broker unreachable: each 200 waits for the spool's fsync."""
    fig = figs["spool_rate"]
    env = b.env()
    env["HOOKPIPE_AMQP_URL"] = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    port = free_port()
    argv = hookpipe_argv("ingress", "--host", "127.0.0.1", "--port", str(port))
    child = await b.start_http("ingress-spooling", argv, port, env)
    try:
        result = await _closed_load(b, port, "spool-load")
    finally:
        b.stop(child)
    b.results["spool"] = result
    _require_answers(result, "the spooling ingress")
    fig.value = result["rate"]
    fig.ceiling = b.results.get("ingress", {}).get("rate")
    fig.note = "spool fsync'ed on the bench's work directory"


# ---------------------------------------------------------------------------------------------
# Peers: what a user would build instead, FastAPI + Celery (bench/peer_app.py)


async def _check_peer(b: Bench, name: str, port: int, confirms: bool) -> None:
    """Before its load: the peer answers a forged webhook 401 and a signed one 200, and only the
    signed one reaches the queue, persistent; with confirms, by the time the 200 arrives."""
    series = b.series()
    signed, forged = payloads.body(series, 0), payloads.body(series, 1)
    url = f"http://127.0.0.1:{port}{payloads.PATH}"
    async with aiohttp.ClientSession() as session:
        for raw, signature, expected in (
            (forged, payloads.sign(forged, "not-" + payloads.SECRET), 401),
            (signed, payloads.sign(signed), 200),
        ):
            headers = {payloads.SIGNATURE_HEADER: signature, "Content-Type": "application/json"}
            async with session.post(url, data=raw, headers=headers) as answer:
                if answer.status != expected:
                    raise RuntimeError(f"{name} answered {answer.status}, not {expected}")
    queue = await b.channel.get_queue(peers.QUEUE, ensure=False)
    # Without confirms the 200 may leave before the broker has the message: it gets a moment.
    deadline = asyncio.get_running_loop().time() + (0 if confirms else 5)
    while (message := await queue.get(no_ack=True, fail=False)) is None:
        if asyncio.get_running_loop().time() >= deadline:
            raise RuntimeError(f"{name}: the signed webhook answered 200 is not in {peers.QUEUE}")
        await asyncio.sleep(0.1)
    args = orjson.loads(message.body)[0]  # Celery's message protocol 2: [args, kwargs, embed]
    if message.correlation_id != payloads.event_id(series, 0) or args != [signed.decode()]:
        raise RuntimeError(f"{name}: {peers.QUEUE} holds another message: {message.info()}")
    if message.delivery_mode != DeliveryMode.PERSISTENT:
        raise RuntimeError(f"{name}: Celery's message is not persistent")
    if await queue.get(no_ack=True, fail=False) is not None:
        raise RuntimeError(f"{name}: the forged webhook reached {peers.QUEUE}")


async def peers_throughput(b: Bench, figs: dict[str, Figure]) -> None:
    """FastAPI + Celery under the ingress phase's load, Celery's confirms on and off, beside
    hookpipe's ingress of the same run (measured here when the ingress phase did not run)."""
    if not peers.installed():
        raise Unavailable(peers.INSTALL)
    note = _load_generator(b)
    details: dict[str, Any] = {
        "versions": {name: metadata.version(name) for name in ("fastapi", "uvicorn", "celery")},
        "queue": f"{peers.QUEUE}: durable, x-queue-type quorum",
    }
    ours = b.results.get("ingress")
    if ours is None:
        ours = details["ingress"] = await _ingress_rate(b, "peers-ingress-load")
        note += "; hookpipe's ingress measured in this phase"
    b.results["peers"] = details
    for confirms, rate, p99 in (
        (True, figs["peer_rate_confirms"], figs["peer_p99_confirms"]),
        (False, figs["peer_rate"], figs["peer_p99"]),
    ):
        child, port = await b.start_peer(confirms)
        try:
            await _check_peer(b, child.name, port, confirms)
            result = await _closed_load(b, port, f"{child.name}-load")
        finally:
            b.stop(child)
            await b.purge(peers.QUEUE)
        details["confirms" if confirms else "no_confirms"] = result
        _require_answers(result, child.name)
        rate.value, rate.ceiling = ours["rate"], result["rate"]
        p99.value, p99.ceiling = ours["p99_ms"], result["p99_ms"]
        rate.note = p99.note = f"{note}; 1 uvicorn process, Celery's pool of 10 connections"


# ---------------------------------------------------------------------------------------------
# Ingress latency at half the maximum rate


async def _open_load(
    b: Bench,
    port: int,
    name: str,
    rate: float,
    seconds: float,
    series: int,
    *,
    record: bool = False,
) -> dict[str, Any]:
    s = b.scale
    result: dict[str, Any] = await b.loadgen(
        name,
        port,
        "open",
        series,
        rate=round(rate, 1),
        seconds=seconds,
        warmup=s.warmup,
        connections=64,
        record=record,
        timeout=seconds + s.warmup + 60,
    )
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    if bad:
        raise RuntimeError(f"{name}: answers other than 200: {bad}")
    if result["send_lag_ms"] > 50:
        raise RuntimeError(
            f"{name}: the generator fell {result['send_lag_ms']:.0f} ms behind its schedule"
        )
    return result


async def ingress_latency(b: Bench, figs: dict[str, Figure]) -> None:
    """p50 / p99 answer time at half the ingress's maximum rate, open loop."""
    s = b.scale
    p50, p99 = figs["ingress_p50"], figs["ingress_p99"]
    if "ingress" not in b.results:
        raise Unavailable("needs the ingress's maximum rate, which was not measured")
    rate = b.results["ingress"]["rate"] / 2
    p50.note = p99.note = f"open loop at {rate:,.0f}/s for {s.latency_seconds:g} s"

    child, port = await b.start_bare_http()
    try:
        bare = await _open_load(b, port, "bare-http-latency", rate, s.latency_seconds, b.series())
    finally:
        b.stop(child)
    p50.ceiling, p99.ceiling = bare["latency_ms"]["p50"], bare["latency_ms"]["p99"]
    b.results["bare_http_latency"] = bare["latency_ms"]

    # The same bare handler, now publishing with a confirm before it answers: what the broker's
    # confirm adds to the tail, which no ingress code can take away.
    child, port = await b.start_bare_http(publish=True)
    try:
        bare = await _open_load(
            b, port, "bare-publish-latency", rate, s.latency_seconds, b.series()
        )
    finally:
        b.stop(child)
        await b.purge()
    figs["ingress_p99_publish"].ceiling = bare["latency_ms"]["p99"]
    b.results["bare_publish_latency"] = bare["latency_ms"]

    child, port = await b.start_ingress()
    try:
        result = await _open_load(b, port, "ingress-latency", rate, s.latency_seconds, b.series())
    finally:
        b.stop(child)
        await b.purge()
    b.results["ingress_latency"] = {"rate": rate, **result["latency_ms"]}
    p50.value, p99.value = result["latency_ms"]["p50"], result["latency_ms"]["p99"]
    figs["ingress_p99_publish"].value = p99.value


# ---------------------------------------------------------------------------------------------
# Worker throughput


async def _bare_consume(b: Bench, count: int, pg_url: str | None = None) -> tuple[Any, Any]:
    """Start the bare consumer for `count` messages; (its child, its result path)."""
    out = b.path(f"bare-consume-{b.series():x}.json")
    argv = python_argv(
        "bench.bare",
        "consume",
        "--url",
        b.amqp_url,
        "--count",
        str(count),
        "--prefetch",
        str(b.settings.worker_concurrency),
        "--out",
        str(out),
        "--stay",
    )
    if pg_url is not None:
        argv += ["--pg", pg_url]
    return b.start("bare-consume", argv), out


async def _worker_rate(b: Bench, ledger_url: str) -> tuple[float, float]:
    """(events applied per second, microseconds of the worker's CPU per event)."""
    n = b.scale.worker_events
    await b.purge()
    await b.preload(b.series(), n)
    worker = await b.start_worker(ledger_url)
    try:
        # CPU from the moment it consumes: start-up (imports, declarations) is not per message.
        cpu_before = worker.cpu_seconds()
        applied_before = await ledger_probe.applied_count(ledger_url)
        await b.wait_applied(ledger_url, n, [worker], timeout=max(60.0, n / 200))
        cpu = worker.cpu_seconds() - cpu_before
    finally:
        b.stop(worker)
    count, rate = await ledger_probe.apply_rate(ledger_url)
    if count != n:
        raise RuntimeError(f"{count} events applied of {n} preloaded")
    return rate, cpu / max(n - applied_before, 1) * 1e6


async def worker_throughput(b: Bench, figs: dict[str, Figure]) -> None:
    """One worker draining N preloaded events, on PostgreSQL and SQLite, beside a bare consumer."""
    n = b.scale.worker_events
    pg, sqlite = figs["worker_pg"], figs["worker_sqlite"]
    await b.purge()
    await b.preload(b.series(), n)
    child, out = await _bare_consume(b, n)
    try:
        bare = await b.wait_result(child, out, timeout=max(60.0, n / 500))
    finally:
        b.stop(child)
    pg.ceiling = sqlite.ceiling = bare["rate"]
    b.results["bare_consume"] = bare
    pg.note = sqlite.note = (
        f"{n:,} distinct events preloaded, concurrency {b.settings.worker_concurrency}; "
        "rate from the ledger's applied_at stamps"
    )
    pg.value, figs["worker_pg_cpu"].value = await _worker_rate(
        b, await b.databases.create("worker")
    )
    figs["worker_pg_cpu"].note = "user + system time of the worker process, after start-up"
    sqlite.value, _ = await _worker_rate(b, f"sqlite:///{b.path('worker.sqlite3')}")


# ---------------------------------------------------------------------------------------------
# End to end


async def _e2e_latencies(
    ledger_url: str,
    series: int,
    load: dict[str, Any],
    applied_timeout_s: float,
    b: Bench,
    watch: list[Any],
) -> list[float]:
    sent = load["sent"]
    await b.wait_applied(ledger_url, sent, watch, timeout=applied_timeout_s)
    applied = await ledger_probe.applied_times_ms(ledger_url)
    latencies = []
    for index, due_ms in load["schedule"]:
        at = applied.get(payloads.event_id(series, index))
        if at is None:
            raise RuntimeError(f"event {index} of series {series:x} never reached the ledger")
        latencies.append(at - due_ms)
    return latencies


async def end_to_end(b: Bench, figs: dict[str, Figure]) -> None:
    """POST to ledger commit at a fixed rate: ingress + worker on PostgreSQL, and a bare pair."""
    s = b.scale
    p50, p99 = figs["e2e_p50"], figs["e2e_p99"]
    rate = s.e2e_rate
    p50.note = p99.note = (
        f"open loop at {rate:,.0f}/s for {s.e2e_seconds:g} s; from each request's scheduled "
        "send time to the ledger's applied_at stamp"
    )

    ceiling_db = await b.databases.create("e2e_bare")
    total = round(rate * (s.warmup + s.e2e_seconds))
    consumer, out = await _bare_consume(b, total, ceiling_db)
    try:
        http, port = await b.start_bare_http(publish=True)
        try:
            series = b.series()
            load = await _open_load(b, port, "bare-e2e", rate, s.e2e_seconds, series, record=True)
            await b.wait_result(consumer, out, timeout=60)
            bare = await _e2e_latencies(ceiling_db, series, load, 60, b, [consumer, http])
            b.results["bare_e2e_answer_ms"] = load["latency_ms"]
            b.results["bare_rss_mb"] = {
                "http_publish": http.rss_mb(),
                "consume_insert": consumer.rss_mb(),
            }
        finally:
            b.stop(http)
    finally:
        b.stop(consumer)
        await b.purge()
    summary = latency_summary(bare)
    p50.ceiling, p99.ceiling = summary["p50"], summary["p99"]
    b.results["bare_e2e_ms"] = summary

    ledger = await b.databases.create("e2e")
    worker = await b.start_worker(ledger)
    try:
        ingress, port = await b.start_ingress()
        try:
            series = b.series()
            load = await _open_load(b, port, "e2e", rate, s.e2e_seconds, series, record=True)
            latencies = await _e2e_latencies(ledger, series, load, 120, b, [worker, ingress])
        finally:
            b.stop(ingress)
    finally:
        b.stop(worker)
        await b.purge()
    summary = latency_summary(latencies)
    b.results["e2e_ms"] = summary
    b.results["e2e_ingress_answer_ms"] = load["latency_ms"]
    p50.value, p99.value = summary["p50"], summary["p99"]


# ---------------------------------------------------------------------------------------------
# Memory


@dataclass(slots=True)
class _Reading:
    ingress: float
    worker: float


async def memory(b: Bench, figs: dict[str, Figure]) -> None:
    """RSS of the ingress and the worker after a warm-up and after a long run through both."""
    s = b.scale
    bare = b.results.get("bare_rss_mb", {})
    figs["ingress_rss"].ceiling = bare.get("http_publish")
    figs["worker_rss"].ceiling = bare.get("consume_insert")
    ledger = await b.databases.create("memory")
    series = b.series()
    worker = await b.start_worker(ledger)
    try:
        ingress, port = await b.start_ingress()
        try:

            async def drive(first: int, count: int, name: str) -> _Reading:
                # Bounded in time too: a slow pipeline shows as fewer webhooks, not a hang.
                load = await b.loadgen(
                    name,
                    port,
                    "closed",
                    series,
                    first=first,
                    count=count,
                    connections=s.connections,
                    seconds=max(30.0, count / 500),
                    timeout=max(30.0, count / 500) + 60,
                )
                ok = load["statuses"].get("200", 0)
                if ok < load["sent"]:
                    raise RuntimeError(f"{name}: answers other than 200: {load['statuses']}")
                await b.wait_applied(
                    ledger, first + load["sent"], [worker, ingress], timeout=max(60.0, count / 200)
                )
                b.results[f"memory_{name}_sent"] = load["sent"]
                return _Reading(ingress.rss_mb(), worker.rss_mb())

            before = await drive(0, s.memory_warmup, "warmup")
            after = await drive(s.memory_warmup, s.memory_events, "long")
            peaks = _Reading(ingress.peak_rss_mb(), worker.peak_rss_mb())
        finally:
            b.stop(ingress)
    finally:
        b.stop(worker)
        await b.purge()
    sent = b.results["memory_long_sent"]
    through = s.memory_warmup + sent
    b.results["memory"] = {
        "before": vars_of(before),
        "after": vars_of(after),
        "peak": vars_of(peaks),
        "webhooks": through,
    }
    for name, start, end in (
        ("ingress", before.ingress, after.ingress),
        ("worker", before.worker, after.worker),
    ):
        growth = (end - start) / (sent / 100_000)
        figs[f"{name}_rss"].value = end
        figs[f"{name}_growth"].value = growth
        figs[f"{name}_rss_1m"].value = end + max(growth, 0.0) * (
            max(MEMORY_TARGET_EVENTS - through, 0) / 100_000
        )
        figs[
            f"{name}_rss"
        ].note = (
            f"{start:.1f} MB after {s.memory_warmup:,} webhooks, {end:.1f} MB after {through:,}"
        )


def vars_of(reading: _Reading) -> dict[str, float]:
    return {"ingress_mb": round(reading.ingress, 1), "worker_mb": round(reading.worker, 1)}


# ---------------------------------------------------------------------------------------------

Phase = Callable[[Bench, dict[str, Figure]], Awaitable[None]]

PHASES: dict[str, tuple[Phase, tuple[str, ...]]] = {
    "ingress": (
        ingress_throughput,
        ("ingress_rate", "ingress_rate_handler", "ingress_rate_http", "ingress_rate_2p"),
    ),
    "peers": (
        peers_throughput,
        ("peer_rate_confirms", "peer_rate", "peer_p99_confirms", "peer_p99"),
    ),
    "latency": (ingress_latency, ("ingress_p50", "ingress_p99", "ingress_p99_publish")),
    "archive": (archive_throughput, ("archive_rate",)),
    "spool": (spool_throughput, ("spool_rate",)),
    "worker": (worker_throughput, ("worker_pg", "worker_pg_cpu", "worker_sqlite")),
    "e2e": (end_to_end, ("e2e_p50", "e2e_p99")),
    "memory": (
        memory,
        (
            "ingress_rss",
            "ingress_rss_1m",
            "ingress_growth",
            "worker_rss",
            "worker_rss_1m",
            "worker_growth",
        ),
    ),
}


def default_phases() -> list[str]:
    """Every phase, less `peers` when its optional dependencies are not installed."""
    return [name for name in PHASES if name != "peers" or peers.installed()]


async def run_phase(name: str, b: Bench, figs: dict[str, Figure]) -> None:
    """Run one phase; what it could not measure is marked missing, with why."""
    phase, keys = PHASES[name]
    try:
        await b.purge()  # whatever an earlier phase left behind would be counted here
        await phase(b, figs)
    except (Unavailable, RuntimeError, TimeoutError, OSError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        for key in keys:
            if figs[key].value is None:
                figs[key].missing = reason
        b.results.setdefault("errors", {})[name] = reason
