"""OpenTelemetry tracing: one trace from the webhook's POST to its ledger commit, across the real
broker, exported to memory; nothing traced (and no traceparent header) when it is off."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aio_pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yarl import URL

from hookpipe import tracing
from hookpipe.errors import SettingsError
from hookpipe.settings import Settings
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.runtime import Worker
from tests import tcp_proxy
from tests.conftest import get_message
from tests.dreamclass_fake import FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture
from tests.ingress_support import SEEDS, StartIngress, dreamclass_body, fresh_jodo
from tests.tcp_proxy import TcpProxy
from tests.worker_support import wait_until

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel
amqp_proxy = tcp_proxy.amqp_proxy


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure("test", {}, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shut_down()


def _named(finished: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [found] = [span for span in finished if span.name == name]
    return found


async def test_one_trace_goes_from_the_post_through_the_broker_to_the_ledger(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    settings = make_settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ingress = await start_ingress(settings)
    queue = SEEDS["jodo"][1]
    handle = f"handle {queue}"
    async with open_handlers(settings) as handlers, Worker(settings, handlers):
        response = await ingress.post("jodo", *fresh_jodo())
        assert response.status == 200
        await wait_until(
            lambda: any(span.name == handle for span in spans.get_finished_spans()),
            what="the worker's span",
        )

    finished = spans.get_finished_spans()
    request = _named(finished, "POST /webhooks/jodo")
    assert {span.context.trace_id for span in finished} == {request.context.trace_id}
    verify, publish = _named(finished, "verify"), _named(finished, "publish")
    handled = _named(finished, handle)
    decoded, applied = _named(finished, "decode"), _named(finished, "ledger.apply")
    assert verify.parent is not None and verify.parent.span_id == request.context.span_id
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    # Across the broker: the worker's span is the publish's child, through the traceparent.
    assert handled.parent is not None and handled.parent.span_id == publish.context.span_id
    assert decoded.parent is not None and decoded.parent.span_id == handled.context.span_id
    assert applied.parent is not None and applied.parent.span_id == handled.context.span_id
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 200
    assert handled.attributes is not None and handled.attributes["hookpipe.attempt"] == 1


async def test_the_dreamclass_api_call_is_a_span_of_the_same_trace(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    dreamclass_fake: FakeDreamClass,
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    settings = dreamclass_fake.settings(
        make_settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    )
    dreamclass_fake.add_invoice(16)  # the seed's invoice
    ingress = await start_ingress(settings)
    async with open_handlers(settings) as handlers, Worker(settings, handlers):
        body = dreamclass_body(event_id=str(uuid.uuid4()))
        assert (await ingress.post("dreamclass", body)).status == 200
        await wait_until(
            lambda: any(span.name == "ledger.apply" for span in spans.get_finished_spans()),
            what="the ledger's span",
        )

    finished = spans.get_finished_spans()
    request = _named(finished, "POST /webhooks/dreamclass")
    calls = [span for span in finished if span.name.startswith("dreamclass.api ")]
    assert calls
    assert {span.context.trace_id for span in calls} == {request.context.trace_id}


async def test_off_by_default_no_span_and_no_traceparent(
    broker: Channel, start_ingress: StartIngress, test_settings: Settings
) -> None:
    assert tracing.configure("test", {}) is False
    assert not tracing.enabled()
    ingress = await start_ingress(test_settings)
    assert (await ingress.post("jodo", *fresh_jodo())).status == 200
    message = await get_message(broker, SEEDS["jodo"][1])
    assert tracing.TRACEPARENT not in (message.headers or {})


def test_an_unknown_exporter_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^OTEL_TRACES_EXPORTER: expected otlp, console"):
        tracing.configure("test", {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert tracing.configure("test", {"OTEL_TRACES_EXPORTER": "console"}) is True
    tracing.shut_down()
    assert not tracing.enabled()
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert tracing.configure("test", disabled) is False


async def test_a_spooled_webhook_is_published_later_in_its_requests_trace(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    spans: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    url = URL(amqp_proxy.url_for(make_settings().amqp_url)).update_query(reconnect_interval="0.1")
    ingress = await start_ingress(make_settings(amqp_url=str(url), spool_dir=str(tmp_path)))
    await amqp_proxy.cut()
    await wait_until(lambda: not ingress.publisher.ready, what="the ingress to notice the cut")
    assert (await ingress.post("jodo", *fresh_jodo())).status == 200
    amqp_proxy.restore()
    message = await get_message(broker, SEEDS["jodo"][1])

    finished = spans.get_finished_spans()
    request, publish = _named(finished, "POST /webhooks/jodo"), _named(finished, "publish")
    assert publish.context.trace_id == request.context.trace_id
    traceparent = str((message.headers or {})[tracing.TRACEPARENT])
    assert traceparent.split("-")[2] == f"{publish.context.span_id:016x}"
