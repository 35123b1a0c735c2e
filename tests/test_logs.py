"""Every log line is JSON in JSON mode, the standard library's records (aiohttp's, aiormq's,
asyncpg's) and their tracebacks included; a worker's lines carry the ingress's request id."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator

import aio_pika
import orjson
import pytest
import structlog

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.broker import connect
from hookpipe.logs import configure_logging, logged_with
from hookpipe.settings import Settings
from hookpipe.workers.errors import PermanentError
from hookpipe.workers.handlers.base import Delivery
from hookpipe.workers.runtime import Worker
from tests import tcp_proxy
from tests.conftest import get_message
from tests.tcp_proxy import TcpProxy
from tests.worker_support import publish_event, wait_until

Channel = aio_pika.abc.AbstractChannel
Q = "jodo.order.payment.debited"
amqp_proxy = tcp_proxy.amqp_proxy


@pytest.fixture
def json_logs() -> Iterator[None]:
    hooks = sys.unraisablehook, sys.excepthook
    configure_logging("json", "info")
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.captureWarnings(False)
        sys.unraisablehook, sys.excepthook = hooks


def _lines(err: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in err.splitlines()]


def test_a_library_record_and_its_traceback_make_one_json_line(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("asyncpg.pool").warning("connection %s lost", "#3")

    first, second = _lines(capsys.readouterr().err)
    assert first["logger"] == "aiohttp.server"
    assert first["level"] == "error"
    assert "ConnectionResetError: peer went away" in str(first["exception"])
    assert second == {
        "event": "connection #3 lost",
        "level": "warning",
        "logger": "asyncpg.pool",
        "timestamp": second["timestamp"],
    }


def test_a_library_record_does_not_take_the_event_context_it_happened_to_run_in(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # As asyncpg's pool task, started while a handler held an event's context, logs later.
    with logged_with(event_id="evt-9", request_id="req-9"):
        logging.getLogger("asyncpg.pool").warning("failed to restore the pool connection floor")
        structlog.get_logger().warning("handler failed")

    library, own = _lines(capsys.readouterr().err)
    assert "event_id" not in library and "request_id" not in library
    assert (own["event_id"], own["request_id"]) == ("evt-9", "req-9")


def test_log_fields_are_on_each_line_of_their_block_and_a_line_s_own_keys_win(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = structlog.get_logger()
    with logged_with(request_id="req-1", provider="jodo") as fields:
        log.warning("before the event is known")
        fields["event_id"] = "evt-1"  # the block's dict is live: later lines carry it
        log.warning("own provider", provider="other")
    log.warning("after the block")

    before, own, after = _lines(capsys.readouterr().err)
    assert (before["request_id"], before["provider"]) == ("req-1", "jodo")
    assert "event_id" not in before
    assert (own["event_id"], own["provider"]) == ("evt-1", "other")
    assert not {"request_id", "provider", "event_id"} & after.keys()


def test_library_records_below_warning_are_dropped(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("aiohttp.access").info("GET /healthz 200")

    assert capsys.readouterr().err == ""


async def test_a_dead_letter_line_carries_the_request_id_of_the_webhook(
    json_logs: None,
    broker: Channel,
    test_settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def refuse(delivery: Delivery) -> None:
        raise PermanentError("no such order")

    async with Worker(test_settings, {Q: refuse}):
        await publish_event(broker, Q, headers={c.HEADER_REQUEST_ID: "req-abc.123"})
        await get_message(broker, topology.dlq_name(Q))

    [dead] = [line for line in _lines(capsys.readouterr().err) if line["event"] == "dead-lettered"]
    assert dead["request_id"] == "req-abc.123"
    assert dead["event_id"] == "evt-1"


async def test_a_robust_channel_failing_to_reopen_on_its_lost_connection_is_not_an_error_line(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # What aio-pika logs, once per process, when the broker node it was connected to dies: the
    # channel's own restore races the connection's reconnect, which then restores it.
    class RobustChannel:
        async def _on_close(self, closing: object) -> None: ...

    class Other:
        async def on_message(self, message: object) -> None: ...

    tools = logging.getLogger("aio_pika.tools")
    for callback in (RobustChannel()._on_close, Other().on_message):
        tools.error(
            "Callback %r error: %s: %s",
            aio_pika.tools.OneShotCallback(callback),
            "RuntimeError",
            "<Connection: amqp://guest:******@127.0.0.1:5672/> closed",
        )

    (line,) = _lines(capsys.readouterr().err)
    assert "Other.on_message" in str(line["event"])
    assert line["level"] == "error"


async def test_a_lost_broker_connection_is_logged_once_and_its_return_once(
    json_logs: None, amqp_url: str, amqp_proxy: TcpProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = await connect(amqp_proxy.url_for(amqp_url) + "?reconnect_interval=0.2", "test")
    try:
        await amqp_proxy.cut()
        await wait_until(lambda: not connection.connected.is_set(), what="the connection lost")
        await asyncio.sleep(1.0)  # several reconnection attempts fail meanwhile
        amqp_proxy.restore()
        await wait_until(lambda: connection.connected.is_set(), what="the connection back")
    finally:
        await connection.close()

    events = [line["event"] for line in _lines(capsys.readouterr().err)]
    assert events.count("broker connection lost") == 1
    assert events.count("broker reconnected") == 1
    assert events.index("broker connection lost") < events.index("broker reconnected")


def test_an_exception_the_interpreter_cannot_raise_is_a_json_line(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    class Closing:
        def __del__(self) -> None:
            raise RuntimeError("failed in __del__")

    Closing()  # garbage at once: the interpreter reports what __del__ raised

    [line] = _lines(capsys.readouterr().err)
    assert line["logger"] == "python"
    assert "RuntimeError: failed in __del__" in str(line["exception"])
