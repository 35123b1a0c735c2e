"""OpenTelemetry tracing, optional: `pip install 'hookpipe[otel]'`, then the standard variables.

Off unless the OpenTelemetry SDK is installed and OTEL_TRACES_EXPORTER names an exporter
(`otlp`, sent to OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT over HTTP, or
`console`); OTEL_SDK_DISABLED=true turns it off again. OTEL_SERVICE_NAME defaults to
`hookpipe-<command>`; OTEL_RESOURCE_ATTRIBUTES and the batch processor's OTEL_BSP_* are read by
the SDK itself.

One trace goes from the webhook's request to its ledger commit: the ingress's server span
(`POST /webhooks/{provider}`) holds `verify` and `publish`; the publish puts a W3C `traceparent`
header on the message (kept through the outage spool, retries and dead letters, which copy the
headers), and the worker's `handle {queue}` span continues that trace, holding `decode`,
`ledger.apply` and any `dreamclass.api` call.

When tracing is off each helper here costs a function call: `span()` hands back one shared
context manager that does nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from hookpipe.errors import SettingsError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
_NOTHING: Final = contextlib.nullcontext()

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def configure(
    command: str,
    environ: Mapping[str, str] | None = None,
    *,
    exporter: SpanExporter | None = None,
) -> bool:
    """Turn tracing on for this process if the environment asks for it (or `exporter` is given,
    for tests, with spans exported as they end); whether it is on. SettingsError names what is
    missing."""
    global _tracer, _provider
    shut_down()
    env = os.environ if environ is None else environ
    wanted = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if exporter is None and (disabled or wanted in ("", "none")):
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER={wanted} needs OpenTelemetry: pip install 'hookpipe[otel]'"
        ) from exc
    service = env.get("OTEL_SERVICE_NAME", "").strip() or f"hookpipe-{command}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter(wanted)))
    # This module's own provider, not OpenTelemetry's global one, which can be set only once:
    # a test's in-memory exporter must be replaceable.
    _provider, _tracer = provider, provider.get_tracer("hookpipe")
    return True


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise SettingsError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'hookpipe[otel]'"
            ) from exc
        return OTLPSpanExporter()
    raise SettingsError(f"OTEL_TRACES_EXPORTER: expected otlp, console or none (got {name!r})")


def shut_down() -> None:
    """Export what is pending and turn tracing off (at exit, and between tests)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str,
    *,
    kind: str = "internal",
    parent: Mapping[str, Any] | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around a block, made current; nothing when tracing is off. `parent` is a
    message's headers to continue the trace of (their traceparent)."""
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    return _started(tracer, name, kind, parent, attributes)


@contextlib.contextmanager
def _started(
    tracer: Tracer,
    name: str,
    kind: str,
    parent: Mapping[str, Any] | None,
    attributes: Mapping[str, str | int] | None,
) -> Iterator[Span]:
    from opentelemetry.propagate import extract

    context = None
    if parent is not None:
        carrier = {k: str(v) for k, v in parent.items() if k in (TRACEPARENT, TRACESTATE)}
        context = extract(carrier)
    with tracer.start_as_current_span(
        name, context=context, kind=_kind(kind), attributes=attributes
    ) as current:
        yield current


def _kind(name: str) -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


def inject(headers: MutableMapping[str, Any]) -> None:
    """Put the current span's traceparent (and tracestate) in a message's headers."""
    if _tracer is None:
        return
    from opentelemetry.propagate import inject as put

    carrier: dict[str, str] = {}
    put(carrier)
    headers.update(carrier)


def traceparent() -> str:
    """The current span's traceparent, or "" (kept with a spooled webhook)."""
    if _tracer is None:
        return ""
    carrier: dict[str, Any] = {}
    inject(carrier)
    return str(carrier.get(TRACEPARENT, ""))


@contextlib.contextmanager
def resumed(parent: str) -> Iterator[None]:
    """Make the span a traceparent names current again (a spooled webhook's, when it is
    published later)."""
    if _tracer is None or not parent:
        yield
        return
    from opentelemetry import context
    from opentelemetry.propagate import extract

    token = context.attach(extract({TRACEPARENT: parent}))
    try:
        yield
    finally:
        context.detach(token)
