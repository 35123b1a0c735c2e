"""The ingress's Prometheus metrics, in a registry per app so that tests do not mix counts.

Under `hookpipe ingress --processes N` (or with HOOKPIPE_METRICS_DIR) the values go to files
shared by the host's ingress processes (hookpipe.host_metrics), and whichever process answers
GET /metrics shows every process's counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hookpipe import host_metrics

if TYPE_CHECKING:
    from hookpipe.ingress.spool import Spool

# A confirmed publish takes around a millisecond on a local broker; the long tail (a broker under
# load, or a publish that times out at HOOKPIPE_PUBLISH_TIMEOUT) goes up to seconds.
_PUBLISH_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Where processes share their metrics, how often each writes its spool's state to the files.
SPOOL_EXPORT_INTERVAL: Final = 1.0


class IngressMetrics:
    """Requests by provider and status, authentication failures by reason, publish latency,
    connections dropped unserved."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._shared = host_metrics.shared()
        if self._shared is None:
            # Shared, they would describe only whichever process answers the scrape.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self._requests = Counter(
            "hookpipe_ingress_requests",
            "Webhook requests answered, by provider and HTTP status.",
            ["provider", "status"],
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "hookpipe_ingress_auth_failures",
            "Webhooks refused with 401, by provider and the check that failed.",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "hookpipe_ingress_publish_seconds",
            "From publishing a webhook to the broker's confirm (or the failure).",
            buckets=_PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self._replays = Counter(
            "hookpipe_ingress_replays",
            "Webhooks answered 200 without a publish: this process had accepted their id lately.",
            ["provider"],
            registry=self.registry,
        )
        self._connections_dropped = Counter(
            "hookpipe_ingress_connections_dropped",
            "Connections closed unserved: `slow` sent no request within the read timeout, `limit`"
            " came past the connection cap (answered 503).",
            ["reason"],
            registry=self.registry,
        )
        # livemin: with several processes on a host, 0 as long as one of them is disconnected.
        self.broker_connected = Gauge(
            "hookpipe_ingress_broker_connected",
            "1 while the ingress's connection to the broker is open, 0 while it is not (webhooks"
            " then go to the outage spool).",
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        # labels() takes a lock and builds a key on every call; the label sets are few.
        self._request_children: dict[tuple[str, int], Counter] = {}

    def request(self, provider: str, status: int) -> None:
        """Count one answered request."""
        child = self._request_children.get((provider, status))
        if child is None:
            child = self._requests.labels(provider, str(status))
            self._request_children[provider, status] = child
        child.inc()

    def auth_failure(self, provider: str, reason: str) -> None:
        """Count one authentication failure; `reason` is one of the providers' fixed reasons."""
        self._auth_failures.labels(provider, reason).inc()

    def replay(self, provider: str) -> None:
        """Count one webhook answered without a publish, its id accepted lately."""
        self._replays.labels(provider).inc()

    def connection_dropped(self, reason: str) -> None:
        """Count one connection closed unserved ("slow" or "limit")."""
        self._connections_dropped.labels(reason).inc()

    def watch_spool(self, spool: Spool) -> None:
        """Export the outage spool's state, read when scraped (or, where the host's processes
        share their metrics, written every SPOOL_EXPORT_INTERVAL)."""
        if self._shared is None:
            self.registry.register(_SpoolCollector(spool))
        else:
            _SharedSpoolExport(spool, self.registry).start()

    def render(self) -> bytes:
        """The text exposition of every metric: this process's, or every process's that
        shares them."""
        if self._shared is not None:
            return host_metrics.render(self._shared.path)
        return generate_latest(self.registry)


class _SharedSpoolExport:
    """The spool's state as metrics of the shared kind: each process's depth and size are
    summed, the oldest age is the largest, the totals are counters."""

    def __init__(self, spool: Spool, registry: CollectorRegistry) -> None:
        self._spool = spool
        self._depth = Gauge(
            "hookpipe_ingress_spool_depth",
            "Webhooks in the outage spool, answered 200 and not yet confirmed by the broker.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._bytes = Gauge(
            "hookpipe_ingress_spool_bytes",
            "Bytes the outage spool takes on disk.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._oldest = Gauge(
            "hookpipe_ingress_spool_oldest_age_seconds",
            "Seconds since the oldest spooled webhook was received (0: the spool is empty).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._spooled = Counter(
            "hookpipe_ingress_spooled",
            "Webhooks written to the outage spool because no broker node took them.",
            registry=registry,
        )
        self._drained = Counter(
            "hookpipe_ingress_spool_drained",
            "Spooled webhooks the broker has since confirmed.",
            registry=registry,
        )
        self._counted = (0, 0)

    def start(self) -> None:
        """Write now and then every SPOOL_EXPORT_INTERVAL on the running loop (if any)."""
        self._export()

    def _export(self) -> None:
        spool = self._spool
        self._depth.set(spool.depth)
        self._bytes.set(spool.size)
        # The drain may be changing the segments under oldest_age(): next time then.
        with contextlib.suppress(RuntimeError):
            self._oldest.set(spool.oldest_age())
        spooled, drained = spool.spooled_total, spool.drained_total
        self._spooled.inc(spooled - self._counted[0])
        self._drained.inc(drained - self._counted[1])
        self._counted = (spooled, drained)
        with contextlib.suppress(RuntimeError):  # no loop: a one-off export
            asyncio.get_running_loop().call_later(SPOOL_EXPORT_INTERVAL, self._export)


class _SpoolCollector(Collector):
    """The outage spool's depth, size and oldest age, and its running totals."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        spool = self._spool
        yield GaugeMetricFamily(
            "hookpipe_ingress_spool_depth",
            "Webhooks in the outage spool, answered 200 and not yet confirmed by the broker.",
            value=spool.depth,
        )
        yield GaugeMetricFamily(
            "hookpipe_ingress_spool_bytes",
            "Bytes the outage spool takes on disk.",
            value=spool.size,
        )
        yield GaugeMetricFamily(
            "hookpipe_ingress_spool_oldest_age_seconds",
            "Seconds since the oldest spooled webhook was received (0: the spool is empty).",
            value=spool.oldest_age(),
        )
        yield CounterMetricFamily(
            "hookpipe_ingress_spooled",
            "Webhooks written to the outage spool because no broker node took them.",
            value=spool.spooled_total,
        )
        yield CounterMetricFamily(
            "hookpipe_ingress_spool_drained",
            "Spooled webhooks the broker has since confirmed.",
            value=spool.drained_total,
        )
