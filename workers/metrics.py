"""The workers' Prometheus metrics, and the small HTTP server that exposes them with the
worker's health: GET /metrics, /healthz (the process answers) and /readyz (consuming)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from hookpipe import host_metrics

log = structlog.get_logger()

# A worker whose metrics port is taken by another worker tries the ports above it, this many in
# all: a host rarely runs more workers by hand, and a small range is easy to scrape.
PORT_RANGE: Final = 10
# How often a worker whose port is held by the worker it shares HOOKPIPE_METRICS_DIR with tries
# to take the port over (that worker may have stopped).
TAKE_OVER_INTERVAL: Final = 5.0

# Handlers take a few milliseconds (one ledger transaction) up to seconds (a DreamClass API call
# with its own retries); end to end adds the broker, and retried messages their delays.
_HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_END_TO_END_BUCKETS = (*_HANDLER_BUCKETS[2:], 30.0, 60.0, 300.0, 900.0)


@dataclass(frozen=True, slots=True)
class QueueSeries:
    """One queue's children of the per-message metrics."""

    handler_seconds: Histogram
    end_to_end_seconds: Histogram
    processed: Counter


class WorkerMetrics:
    """Counters and histograms of one worker process, in a registry of their own.

    A registry per worker keeps tests (several workers in one process) from sharing counts.
    Where the host's processes share a metrics directory (hookpipe.host_metrics), the values go
    to files there instead, and `render()` shows every process's.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._shared = host_metrics.shared()
        if self._shared is None:
            # Shared, they would describe only whichever process answers the scrape.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.processed = Counter(
            "hookpipe_worker_processed",
            "Messages handled successfully and acknowledged.",
            ["queue"],
            registry=self.registry,
        )
        self.retried = Counter(
            "hookpipe_worker_retried",
            "Messages sent to a delayed retry after a transient failure.",
            ["queue"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "hookpipe_worker_dead_lettered",
            "Messages sent to their queue's DLQ, by queue and why (see DeadLetterReason).",
            ["queue", "reason"],
            registry=self.registry,
        )
        # livemin: with several processes on a host, 0 as long as one of them is disconnected.
        self.broker_connected = Gauge(
            "hookpipe_worker_broker_connected",
            "1 while this worker's connection to the broker is open, 0 while it is not.",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # Error types are a fixed few (TransientError, LedgerStorageError, ValidationError, ...):
        # which kind of trouble the retries and dead letters come from, e.g. a full disk.
        self.failures = Counter(
            "hookpipe_worker_failures",
            "Handler failures (retried or dead-lettered), by queue and error type.",
            ["queue", "error_type"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "hookpipe_worker_handler_seconds",
            "Time a handler took, whatever its outcome.",
            ["queue"],
            buckets=_HANDLER_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            "hookpipe_end_to_end_seconds",
            "From receipt at the ingress to the ledger commit.",
            ["queue"],
            buckets=_END_TO_END_BUCKETS,
            registry=self.registry,
        )
        # liveall: one sample per live process (a pid label) where processes share a directory:
        # the --processes parent's /readyz reads each child's, and a scrape shows which
        # processes do the work.
        self.consuming = Gauge(
            "hookpipe_worker_consuming",
            "1 while this worker process is connected and consuming every queue it was given.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self.process_handled = Gauge(
            "hookpipe_worker_process_handled",
            "Messages this worker process has handled since it started, whatever the outcome.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._queues: dict[str, QueueSeries] = {}

    def of_queue(self, queue: str) -> QueueSeries:
        """The series of `queue` that every handled message touches, labelled once per queue
        (a labels() call takes a lock and builds a key: three a message were a measurable
        share of a worker's time)."""
        series = self._queues.get(queue)
        if series is None:
            series = self._queues[queue] = QueueSeries(
                self.handler_seconds.labels(queue),
                self.end_to_end_seconds.labels(queue),
                self.processed.labels(queue),
            )
        return series

    def render(self) -> bytes:
        """The text exposition: this process's metrics, or every process's that shares them."""
        if self._shared is not None:
            return host_metrics.render(self._shared.path)
        return generate_latest(self.registry)


Readiness = Callable[[], tuple[bool, dict[str, Any]]]


def metrics_app(render: Callable[[], bytes], readiness: Readiness) -> web.Application:
    """GET /metrics, /healthz and /readyz (200 when `readiness` says ready, else 503)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def readyz(_: web.Request) -> web.Response:
        ready, detail = readiness()
        body = {"status": "ready" if ready else "not ready", **detail}
        return web.Response(
            status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class MetricsEndpoint:
    """The worker's metrics and health server, and the rule for a port another worker holds.

    On a taken port: a worker that shares HOOKPIPE_METRICS_DIR with another live worker serves
    nothing (that one's scrape includes its counts) and takes the port over once it frees;
    any other takes the next free port of the PORT_RANGE - 1 above it, logged.
    """

    def __init__(self, render: Callable[[], bytes], readiness: Readiness) -> None:
        self._render = render
        self._readiness = readiness
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The port served, or None while another process serves this one's metrics."""
        return None if self._runner is None else bound_port(self._runner)

    async def open(self, port: int, *, shared: bool, host: str = "0.0.0.0") -> None:
        """Serve on `port` by the rule above; OSError when no port of the range is free."""
        try:
            self._runner = await _serve(metrics_app(self._render, self._readiness), host, port)
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                raise
        if shared:
            log.info(
                f"metrics port {port} is taken, by the worker this one shares "
                "HOOKPIPE_METRICS_DIR with: its scrape includes this worker's counts; taking the "
                "port over if it frees"
            )
            self._task = asyncio.create_task(self._take_over(host, port))
            return
        for candidate in range(port + 1, min(port + PORT_RANGE, 65536)):
            try:
                self._runner = await _serve(
                    metrics_app(self._render, self._readiness), host, candidate
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            log.warning(
                f"metrics port {port} is taken (another worker on this host?); serving metrics "
                f"on port {candidate} instead",
                metrics_port=candidate,
            )
            return
        raise OSError(errno.EADDRINUSE, f"ports {port} to {port + PORT_RANGE - 1} are all taken")

    async def _take_over(self, host: str, port: int) -> None:
        while True:
            await asyncio.sleep(TAKE_OVER_INTERVAL)
            try:
                self._runner = await _serve(metrics_app(self._render, self._readiness), host, port)
            except OSError:
                continue
            log.info(f"took the metrics port {port} over", metrics_port=port)
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()


async def start_metrics_server(
    metrics: WorkerMetrics, port: int, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve `metrics` (and a /readyz that is always ready) on `port` (0: any free port); the
    caller cleans the runner up."""
    return await _serve(metrics_app(metrics.render, lambda: (True, {})), host, port)


async def _serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a started metrics server listens on (useful when it was asked for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the metrics server is not listening")
