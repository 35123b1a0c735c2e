"""The aiohttp application: POST /webhooks/{provider}, /healthz, /readyz, /metrics.

A webhook goes through, in order: provider known and configured (404), no Content-Encoding (415),
body size (413), the body read whole (400), authentication on the raw bytes (401), event id and
type (400), confirmed publish, and only then 200. When no broker node takes it (unreachable, or
no confirm in time) it goes to the outage spool on disk instead (ingress/spool.py), and 200 once
it is there; 503 only when the spool is off, full or cannot be written. Anything else that goes
wrong is a bug: answered 500 with the request id, logged with its traceback as one line, counted.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from hookpipe import providers, tracing
from hookpipe.errors import BrokerUnavailable
from hookpipe.ingress.envelope import Envelope
from hookpipe.ingress.errors import (
    AuthenticationFailed,
    InvalidEnvelope,
    PayloadTooLarge,
    ReadTimeout,
    Refused,
    UnknownProvider,
    UnsupportedEncoding,
)
from hookpipe.ingress.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hookpipe.ingress.metrics import IngressMetrics
from hookpipe.ingress.publisher import Publisher
from hookpipe.ingress.replay import ReplayGuard
from hookpipe.ingress.server import GUARD, ConnectionGuard, mark_begun
from hookpipe.ingress.spool import Spool, Spooled
from hookpipe.logs import log_fields
from hookpipe.settings import Settings

log = structlog.get_logger()

SETTINGS: Final = web.AppKey("settings", Settings)
PUBLISHER: Final = web.AppKey("publisher", Publisher)
METRICS: Final = web.AppKey("metrics", IngressMetrics)
SPOOL: Final = web.AppKey("spool", Spool)

REQUEST_ID_HEADER: Final = "X-Request-ID"
# Seconds a provider is asked to wait after a 503: about how long a broker restart or failover
# takes to be noticed and reconnected.
RETRY_AFTER: Final = "5"
# A caller's request id is kept only if it is this tame; anything else is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_JSON: Final = "application/json"

Clock = Callable[[], float]


def create_app(settings: Settings, *, clock: Clock = time.time) -> web.Application:
    """The ingress application; `clock` (Unix seconds) is the "now" timestamps are held to."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[mark_begun])
    metrics = IngressMetrics()
    publisher = Publisher(settings, on_state=metrics.broker_connected.set)
    spool = None
    if settings.spool_dir:
        # Opened now: a directory another ingress holds stops the start with one line.
        spool = Spool(Path(settings.spool_dir), settings.spool_max_bytes)
        spool.open()
        app[SPOOL] = spool
        metrics.watch_spool(spool)
    app[GUARD] = ConnectionGuard(settings, metrics)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    app[METRICS] = metrics
    webhooks = _Webhooks(settings, publisher, spool, metrics, clock)
    app.router.add_post("/webhooks/{provider}", webhooks.handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_broker)
    return app


async def _broker(app: web.Application) -> AsyncIterator[None]:
    """The broker connection and the spool live as long as the app; the connection is made in
    the background, and the spool's drain publishes through it."""
    publisher = app[PUBLISHER]
    spool = app.get(SPOOL)
    publisher.start()
    if spool is not None:
        spool.start(publisher.publish_spooled, lambda: publisher.ready)
    yield
    if spool is not None:
        settings = app[SETTINGS]
        await spool.settle(settings.shutdown_grace, lambda: publisher.ready)
        await spool.close()
    await publisher.close()


class _Webhooks:
    """The POST handler, with what it needs looked up once rather than per request."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        spool: Spool | None,
        metrics: IngressMetrics,
        clock: Clock,
    ) -> None:
        known = providers.providers()
        # The providers whose settings are complete; the others accept nothing.
        self._authenticators = {
            name: provider.build_authenticator(settings)
            for name, provider in known.items()
            if provider.configured(settings)
        }
        self._not_configured = {
            name: provider.missing(settings)
            for name, provider in known.items()
            if name not in self._authenticators
        }
        self._publisher = publisher
        self._spool = spool
        self._metrics = metrics
        self._clock = clock
        self._max_body = settings.max_body_bytes
        self._read_timeout = settings.read_timeout
        self._replays = ReplayGuard(settings.replay_memory)

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        # A metric label and a log field: an unknown name must not mint new ones.
        label = name if name in self._authenticators or name in self._not_configured else "unknown"
        if not tracing.enabled():
            return await self._handle(request, name, label)
        with tracing.span(
            f"POST /webhooks/{label}", kind="server", attributes={"hookpipe.provider": label}
        ) as span:
            response = await self._handle(request, name, label)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
            return response

    async def _handle(self, request: web.Request, name: str, label: str) -> web.Response:
        request_id = _request_id(request.headers.get(REQUEST_ID_HEADER))
        # aiohttp serves a keep-alive connection's requests in one task: each starts clean.
        fields = log_fields(request_id=request_id, provider=label)
        try:
            authenticator = self._authenticator(name)
            body = await self._read(request)
            received_at_ms = time.time_ns() // 1_000_000
            with tracing.span("verify"):
                envelope = authenticator.authenticate(
                    body, request.headers, request.remote, self._clock()
                )
            fields["event_id"], fields["event_type"] = envelope
            # With the type: where only the id is signed (DreamClass), a copy of a genuine
            # webhook under another type must not make the genuine one look like a repeat.
            key = f"{name}:{envelope.event_id}:{envelope.event_type}"
            if self._replays.seen(key):
                # Accepted and confirmed before: the same answer, without a second publish.
                self._metrics.replay(label)
                log.debug("webhook repeated", status=200)
                return self._accepted(envelope, request_id, label)
            spool = self._spool
            if spool is not None and (spool.holding or not self._publisher.ready):
                # The broker is away, or webhooks accepted earlier wait to be published: this
                # one queues behind them.
                await self._spool_it(spool, body, name, envelope, request_id, received_at_ms)
            else:
                try:
                    await self._publish(body, name, envelope, request_id, received_at_ms)
                except BrokerUnavailable:
                    if spool is None:
                        raise
                    await self._spool_it(spool, body, name, envelope, request_id, received_at_ms)
            self._replays.accepted(key)
        except AuthenticationFailed as exc:
            self._metrics.auth_failure(label, exc.reason)
            return self._refuse(label, exc.status, exc.reason, request_id)
        except Refused as exc:
            return self._refuse(label, exc.status, exc.reason, request_id)
        except BrokerUnavailable as exc:
            return self._refuse(
                label,
                503,
                "broker unavailable",
                request_id,
                detail=str(exc),
                headers={"Retry-After": RETRY_AFTER},
            )
        except Exception:
            # A bug, not the caller's fault: nothing was published (the publish is the last step
            # and its failures are BrokerUnavailable), so the provider's retry loses nothing.
            self._metrics.request(label, 500)
            log.exception("webhook failed", status=500)
            return web.Response(
                status=500,
                body=orjson.dumps({"error": "internal error", "request_id": request_id}),
                content_type=_JSON,
                headers={REQUEST_ID_HEADER: request_id},
            )
        # Debug, not info: a JSON line per accepted webhook costs about a quarter of the ingress's
        # throughput (docs/performance.md); refusals and failures are logged at warning.
        log.debug("webhook accepted", status=200)
        return self._accepted(envelope, request_id, label)

    async def _publish(
        self, body: bytes, name: str, envelope: Envelope, request_id: str, received_at_ms: int
    ) -> None:
        started = time.perf_counter()
        try:
            with tracing.span("publish", kind="producer"):
                await self._publisher.publish(body, name, envelope, request_id, received_at_ms)
        finally:
            # A failed or timed-out publish is observed too: it is the tail this shows.
            self._metrics.publish_seconds.observe(time.perf_counter() - started)

    async def _spool_it(
        self,
        spool: Spool,
        body: bytes,
        name: str,
        envelope: Envelope,
        request_id: str,
        received_at_ms: int,
    ) -> None:
        event_id, event_type = envelope
        with tracing.span("spool"):
            record = Spooled(
                received_at_ms, name, event_id, event_type, request_id, body, tracing.traceparent()
            )
            await spool.append(record)
        log.debug("webhook spooled")

    def _accepted(self, envelope: Envelope, request_id: str, label: str) -> web.Response:
        self._metrics.request(label, 200)
        return web.Response(
            body=orjson.dumps({"status": "accepted", "id": envelope.event_id}),
            content_type=_JSON,
            headers={REQUEST_ID_HEADER: request_id},
        )

    def _authenticator(self, name: str) -> providers.Authenticator:
        authenticator = self._authenticators.get(name)
        if authenticator is not None:
            return authenticator
        missing = self._not_configured.get(name)
        if missing is None:
            known = ", ".join((*self._authenticators, *self._not_configured))
            raise UnknownProvider(f"unknown provider; expected one of {known}")
        # Which settings are missing is for the operator's log, not for the caller.
        log.warning("provider not configured", missing=list(missing))
        raise UnknownProvider(f"provider {name} is not configured on this ingress")

    async def _read(self, request: web.Request) -> bytes:
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise UnsupportedEncoding("Content-Encoding is not supported; send the body as is")
        length = request.content_length
        if length is not None and length > self._max_body:
            raise PayloadTooLarge(f"body over {self._max_body} bytes")
        try:
            # client_max_size caps the read too, for a body sent without a Content-Length.
            if request.content.is_eof():
                # The whole body came with the headers (a webhook mostly does): nothing to wait
                # for, so no timer to arm and cancel.
                return await request.read()
            async with asyncio.timeout(self._read_timeout):
                return await request.read()
        except TimeoutError as exc:
            raise ReadTimeout(f"body not received within {self._read_timeout:g} s") from exc
        except web.HTTPRequestEntityTooLarge as exc:
            raise PayloadTooLarge(f"body over {self._max_body} bytes") from exc
        except (web.RequestPayloadError, HttpProcessingError) as exc:
            # A malformed chunked body, or one cut short: aiohttp's parser gives up on it.
            raise InvalidEnvelope("body could not be read") from exc

    def _refuse(
        self,
        label: str,
        status: int,
        reason: str,
        request_id: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._metrics.request(label, status)
        log.warning("webhook refused", status=status, reason=reason, detail=detail)
        return web.Response(
            status=status,
            body=orjson.dumps({"error": reason}),
            content_type=_JSON,
            headers={REQUEST_ID_HEADER: request_id, **(headers or {})},
        )


def _request_id(given: str | None) -> str:
    """The caller's X-Request-ID if it is a sane one, else a new one."""
    if given is not None and _SANE_REQUEST_ID.fullmatch(given) is not None:
        return given
    return uuid.uuid4().hex


async def _healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def _readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while webhooks can be accepted: "ready" with the broker connection and the
    publishing channel open and nothing spooled, "degraded" while the outage spool takes them
    (or is being published); 503 when neither can."""
    ready = request.app[PUBLISHER].ready
    spool = request.app.get(SPOOL)
    if spool is not None and (spool.holding or not ready) and spool.has_room():
        body = {
            "status": "degraded",
            "broker": "connected" if ready else "unavailable",
            "spooled": spool.depth,
        }
        return web.Response(body=orjson.dumps(body), content_type=_JSON)
    if ready:
        return web.Response(body=b'{"status":"ready"}', content_type=_JSON)
    return web.Response(
        status=503,
        body=b'{"status":"broker unavailable"}',
        content_type=_JSON,
        headers={"Retry-After": RETRY_AFTER},
    )


async def _metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
    )
