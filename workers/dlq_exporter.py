"""`hookpipe dlq exporter`: each DLQ's depth and the age of its oldest dead letter (and the same
for hookpipe.unrouted) as Prometheus gauges, the one broker-side figure RabbitMQ's own plugin
cannot give.

The plugin counts a queue's messages but knows nothing of their age (quorum queues keep no head
timestamp), and AMQP cannot browse a queue: the age is read from the messages themselves, by the
same take-and-give-back a `hookpipe dlq list` does (hookpipe.workers.dlq_session). Peeking the
head alone would be cheaper, but before RabbitMQ 4.0 a message given back to a DLQ goes to its
tail, so every peek would turn the DLQ's order round by one.

What keeps it cheap: every INTERVAL it asks each queue's depth (one passive declare each, no
message moved) and reads only the non-empty ones, which in a healthy pipeline is none. A DLQ
deeper than `max_scan` is not read (the last age measured stands, growing with time): by then it
is an incident, and the alert on its depth has fired. One process per vhost is enough (it is not
part of a worker, so that N workers do not read the same DLQs N times); it takes each DLQ's lock
as the operators' commands do, so it never runs beside one of them on the same DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractConnection
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hookpipe.errors import HookpipeError
from hookpipe.settings import Settings
from hookpipe.workers.cli_support import interruptible
from hookpipe.workers.dlq import EXPORTER_INTERVAL, EXPORTER_MAX_SCAN
from hookpipe.workers.dlq_letter import letters_queue
from hookpipe.workers.dlq_ops import letter_queues, summarize
from hookpipe.workers.dlq_session import DlqSession, connect, ready_count
from hookpipe.workers.errors import DlqBusy

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Seen:
    """One queue as the last scan found it."""

    queue: str
    dlq: str
    messages: int
    oldest: datetime | None  # None: empty, or never read (too deep, busy since the start)


class DlqExporter:
    """Scans the DLQs every `interval` seconds; `registry` exports what the last scan saw."""

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float = EXPORTER_INTERVAL,
        max_scan: int = EXPORTER_MAX_SCAN,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.interval = interval
        self.max_scan = max_scan
        self.queues = tuple(queues) if queues is not None else letter_queues()
        self.seen: dict[str, Seen] = {}
        self.last_scan: float | None = None  # Unix time of the last scan that completed
        self.failures = 0
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once a scan has completed."""
        return self.last_scan is not None, {"last_scan": self.last_scan}

    async def run(self, stop: asyncio.Event) -> None:
        """Scan now and every `interval` seconds until `stop` is set; a failed scan is logged,
        counted, and tried again at the next interval."""
        while not stop.is_set():
            try:
                await self.scan(stop)
            except (HookpipeError, OSError, RuntimeError, aiormq.exceptions.AMQPError) as exc:
                self.failures += 1
                log.warning("DLQ scan failed", error_type=type(exc).__name__, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def scan(self, stop: asyncio.Event | None = None) -> None:
        """Look at every queue once."""
        stop = stop or asyncio.Event()
        connection = await connect(self.settings)
        try:
            channel = await connection.channel()
            for queue in self.queues:
                if stop.is_set():
                    return
                dlq = letters_queue(queue)
                depth = await ready_count(channel, dlq)
                previous = self.seen.get(queue)
                kept = previous.oldest if previous is not None else None
                oldest = None
                if depth > self.max_scan:
                    oldest = kept
                elif depth:
                    try:
                        oldest = await self._read(connection, queue)
                    except DlqBusy:  # an operator's command has it: the last age stands
                        oldest = kept
                self.seen[queue] = Seen(queue, dlq, depth, oldest)
        finally:
            with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
                await connection.close()
        self.last_scan = time.time()

    async def _read(self, connection: AbstractConnection, queue: str) -> datetime | None:
        """The oldest failure in `queue`'s DLQ; DlqBusy if an operator's command holds it."""
        async with DlqSession(connection, queue, self.settings) as session:
            return (await summarize(session, asyncio.Event())).oldest_failed_at


class _Collector(Collector):
    def __init__(self, exporter: DlqExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        exporter = self._exporter
        now = time.time()
        labels = ["queue", "dlq"]
        messages = GaugeMetricFamily(
            "hookpipe_dlq_messages",
            "Messages ready in each DLQ and in hookpipe.unrouted (queue: the handled queue), at"
            " the last scan.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "hookpipe_dlq_oldest_age_seconds",
            "Seconds since the oldest message of each DLQ failed (hookpipe.unrouted: since it"
            " was received); 0 when empty.",
            labels=labels,
        )
        for seen in exporter.seen.values():
            messages.add_metric([seen.queue, seen.dlq], seen.messages)
            oldest = 0.0 if seen.oldest is None else max(now - seen.oldest.timestamp(), 0.0)
            age.add_metric([seen.queue, seen.dlq], oldest)
        yield messages
        yield age
        yield GaugeMetricFamily(
            "hookpipe_dlq_last_scan_timestamp_seconds",
            "When the last scan of the DLQs completed (Unix time; 0: none yet).",
            value=exporter.last_scan or 0.0,
        )
        yield CounterMetricFamily(
            "hookpipe_dlq_scan_failures",
            "Scans of the DLQs that failed (the broker unreachable, a queue missing).",
            value=exporter.failures,
        )


async def serve(settings: Settings, port: int, interval: float, max_scan: int) -> int:
    """Scan and serve /metrics on `port` until SIGTERM or SIGINT; the exit code."""
    from hookpipe.workers.metrics import MetricsEndpoint

    exporter = DlqExporter(settings, interval=interval, max_scan=max_scan)
    endpoint = MetricsEndpoint(exporter.render, exporter.readiness)
    await endpoint.open(port, shared=False)
    log.info("DLQ exporter started", metrics_port=endpoint.port, interval_s=interval)
    try:
        async with interruptible() as stop:
            await exporter.run(stop)
    finally:
        await endpoint.close()
    log.info("DLQ exporter stopped")
    return 0
