"""The workers' Prometheus metrics, and the small HTTP server that exposes them."""

from __future__ import annotations

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

# Handlers take a few milliseconds (one ledger transaction) up to seconds (a DreamClass API call
# with its own retries); end to end adds the broker, and retried messages their delays.
_HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_END_TO_END_BUCKETS = (*_HANDLER_BUCKETS[2:], 30.0, 60.0, 300.0, 900.0)


class WorkerMetrics:
    """Counters and histograms of one worker process, in a registry of their own.

    A registry per worker keeps tests (several workers in one process) from sharing counts.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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


async def start_metrics_server(
    metrics: WorkerMetrics, port: int, host: str = "0.0.0.0"
) -> web.AppRunner:
    """Serve GET /metrics on `port` (0: any free port); the caller cleans the runner up."""

    async def serve(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", serve)
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
