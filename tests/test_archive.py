"""The archive stream and `hookpipe events`, on the real broker: what the ingress's confirm covers,
unrouted webhooks, retention, exact windows read without the rest of the stream, export, replay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.settings import Settings
from hookpipe.workers import archive, events_cli
from hookpipe.workers.archive import ReadStats, Selection, from_ms
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.ledger import Ledger
from hookpipe.workers.runtime import Worker
from tests import signers
from tests.conftest import JODO_SECRET, get_message, guest_vhost, queue_depth
from tests.ingress_support import Ingress, fresh_jodo
from tests.worker_support import run_cli, wait_until

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel
JODO = "jodo.order.payment.debited"


async def archive_event(
    channel: Channel,
    received_at_ms: int,
    *,
    routing_key: str = JODO,
    event_id: str | None = None,
    body: bytes = b"{}",
) -> str:
    """Publish as the ingress does, with a receipt time of the test's choosing; the event id."""
    event_id = event_id or uuid.uuid4().hex
    provider, _, event_type = routing_key.partition(".")
    exchange = await channel.get_exchange(c.ACCEPTED_EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            body,
            message_id=f"{provider}:{event_id}",
            type=event_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={
                c.HEADER_RECEIVED_AT: received_at_ms,
                c.HEADER_ATTEMPT: 0,
                c.HEADER_PROVIDER: provider,
                c.HEADER_EVENT_ID: event_id,
            },
        ),
        routing_key=routing_key,
        mandatory=True,
    )
    return event_id


async def read_all(
    settings: Settings, selection: Selection, **bounds: Any
) -> tuple[list[archive.ArchivedEvent], ReadStats]:
    stats = ReadStats()
    events = [e async for e in archive.read(settings, selection, stats=stats, **bounds)]
    return events, stats


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the topology ----------------------------------------------------------------------------


async def test_a_confirmed_webhook_is_in_the_archive_as_published(
    ingress: Ingress, broker: Channel, test_settings: Settings
) -> None:
    body, headers = fresh_jodo()
    response = await ingress.post("jodo", body, headers)
    assert response.status == 200, await response.text()
    # The 200 came after the confirm, and a confirm covers every queue the message was routed
    # to: the archive holds it now, no waiting.
    queued = await get_message(broker, JODO, timeout=0.5)
    event_id = orjson.loads(body)["event_id"]
    found, _ = await read_all(
        test_settings, Selection(provider="jodo", event_id=event_id, since=_recent())
    )
    [event] = found
    assert event.body == body == queued.body
    # The quorum queue adds its delivery count; the rest is the ingress's, in both.
    assert dict(event.headers) == {
        k: v for k, v in (queued.headers or {}).items() if k != "x-delivery-count"
    }
    assert event.message_id == queued.message_id and event.event_type == queued.type
    assert event.queue == JODO


async def test_an_unrouted_webhook_lands_in_unrouted_and_in_the_archive(
    ingress: Ingress, broker: Channel, test_settings: Settings
) -> None:
    body = fresh_jodo()[0].replace(b'"order.payment.debited"', b'"order.payment.something_new"')
    response = await ingress.post("jodo", body, signers.jodo(body, JODO_SECRET))
    assert response.status == 200, await response.text()
    assert (await get_message(broker, c.UNROUTED_QUEUE)).body == body
    event_id = orjson.loads(body)["event_id"]
    [event], _ = await read_all(
        test_settings, Selection(provider="jodo", event_id=event_id, since=_recent())
    )
    assert event.body == body
    assert event.routing_key == "jodo.order.payment.something_new" and event.queue is None


def test_retention_settings_become_the_stream_arguments(test_settings: Settings) -> None:
    settings = dataclasses.replace(
        test_settings,
        archive_max_age=3 * 86400.0,
        archive_max_bytes=5_000_000,
        archive_segment_bytes=1_000_000,
    )
    vhost = f"hookpipe-test-retention-{uuid.uuid4().hex[:8]}"
    with guest_vhost(vhost) as url:
        asyncio.run(topology.declare_with(dataclasses.replace(settings, amqp_url=url)))
        command = ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments"]
        listed = subprocess.run(
            [*command, "--formatter", "json"],
            check=True,
            capture_output=True,
            timeout=240,
        )
        queues = {q["name"]: q["arguments"] for q in json.loads(listed.stdout)}
        arguments = {name: value for name, _, value in queues[c.ARCHIVE_STREAM]}
        assert arguments == {
            "x-queue-type": "stream",
            "x-max-age": "259200s",
            "x-max-length-bytes": 5_000_000,
            "x-stream-max-segment-size-bytes": 1_000_000,
        }


# --- windows ---------------------------------------------------------------------------------


async def test_a_window_is_exact_at_both_ends(broker: Channel, test_settings: Settings) -> None:
    # In the past: no webhook is received after it is published, and a later test's window
    # (from its own start) must not hold these.
    base = now_ms() - 2000
    ids = {}
    for delta in (-1, 0, 1, 499, 999, 1000, 1001):
        ids[delta] = await archive_event(broker, base + delta, event_id=f"edge{delta}-{base}")
    selection = Selection(since=from_ms(base), until=from_ms(base + 1000))
    found, _ = await read_all(test_settings, selection)
    assert [e.event_id for e in found] == [ids[d] for d in (0, 1, 499, 999)]


async def test_a_window_is_read_without_what_came_before_or_after(
    broker: Channel, test_settings: Settings
) -> None:
    # Before, the window, after: far enough apart in the broker's time (its chunk timestamps)
    # that the read can seek past the first and stop before the last.
    before = [await archive_event(broker, now_ms()) for _ in range(300)]
    await asyncio.sleep(2.5)
    since = from_ms(now_ms())
    inside = [await archive_event(broker, now_ms()) for _ in range(5)]
    until = from_ms(now_ms() + 1)
    end_bound = test_settings.publish_timeout + archive.CLOCK_SKEW.total_seconds()
    await asyncio.sleep(end_bound + 0.5)
    after = [await archive_event(broker, now_ms()) for _ in range(300)]

    found, stats = await read_all(test_settings, Selection(since=since, until=until))
    assert [e.event_id for e in found] == inside
    assert stats.stopped_by == "until"
    # At most the chunks around the window's ends: nothing like the 600 around it.
    assert stats.read <= len(inside) + 50, stats
    assert before and after


async def test_a_read_without_until_stops_at_the_newest_event(
    broker: Channel, test_settings: Settings
) -> None:
    since = from_ms(now_ms())
    inside = [await archive_event(broker, now_ms()) for _ in range(3)]
    started = time.monotonic()
    found, stats = await read_all(test_settings, Selection(since=since))
    assert [e.event_id for e in found] == inside
    assert stats.stopped_by == "tail"
    assert time.monotonic() - started < archive.FIRST_DELIVERY_WAIT_S + 1


async def test_a_window_after_the_newest_event_reads_nothing(test_settings: Settings) -> None:
    since = from_ms(now_ms()) + timedelta(hours=1)
    found, stats = await read_all(test_settings, Selection(since=since))
    assert found == [] and stats.read == 0


# --- the command -----------------------------------------------------------------------------


async def test_export_round_trips_byte_for_byte(broker: Channel, test_settings: Settings) -> None:
    since = from_ms(now_ms())
    bodies = [
        b'{"event_id":"a","amount":"10.00","name":"R\xc3\xa9mi \\u00e9"}',
        b"\xff\xfe not UTF-8 \x00 at all",
        b"",
    ]
    sent = [await archive_event(broker, now_ms(), body=body) for body in bodies]
    code, out, err = await run_cli(test_settings, "events", "export", "--since", since.isoformat())
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["event_id"] for line in lines] == sent
    assert [events_cli.exported_body(line) for line in lines] == bodies
    assert [line["body_encoding"] for line in lines] == ["utf-8", "base64", "utf-8"]
    assert lines[0]["headers"][c.HEADER_EVENT_ID] == sent[0]
    assert err.startswith("exported 3; read ")


async def test_list_and_show_as_an_operator_runs_them(
    ingress: Ingress, broker: Channel, test_settings: Settings
) -> None:
    async with await Ledger.open(test_settings.ledger_url):
        pass  # a ledger that exists, and has not applied it: no worker runs
    body, headers = fresh_jodo()
    assert (await ingress.post("jodo", body, headers)).status == 200
    event_id = orjson.loads(body)["event_id"]

    code, out, err = await run_cli(test_settings, "events", "list", "--since", "1m", "--json")
    assert code == 0, err
    listed = [orjson.loads(line) for line in out.splitlines()]
    assert listed[0]["event_id"] == event_id  # newest first
    assert listed[0]["queue"] == JODO

    code, out, err = await run_cli(test_settings, "events", "show", "jodo", event_id)
    assert code == 0, err
    assert event_id in out and "personal data masked" in out
    assert "not applied yet" in out
    # The customer's details are in the body, and masked.
    assert b"customer" not in body or "***" in out

    code, _, err = await run_cli(test_settings, "events", "show", "jodo", "no-such-event")
    assert code == 1 and "no webhook 'no-such-event'" in err


# --- replay ----------------------------------------------------------------------------------


async def test_replay_restores_exactly_the_lost_payments_once(
    ingress: Ingress,
    broker: Channel,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    settings = make_settings(ledger_url=f"sqlite:///{ledger_path}")
    orders = [f"order_{uuid.uuid4().hex[:10]}" for _ in range(4)]
    since = from_ms(now_ms())
    events = []
    async with open_handlers(settings) as handlers, Worker(settings, handlers):
        for order in orders:
            body, headers = fresh_jodo(order_id=order)
            assert (await ingress.post("jodo", body, headers)).status == 200
            events.append(orjson.loads(body)["event_id"])
        ledger = await Ledger.open(settings.ledger_url)
        try:

            async def all_paid() -> bool:
                return all([await ledger.get("jodo", order) is not None for order in orders])

            await wait_until(all_paid, what="the four payments applied")
            before = {order: await ledger.get("jodo", order) for order in orders}
        finally:
            await ledger.close()
        until = from_ms(now_ms() + 1)

        # The ledger restored from a backup that lacks the last two.
        lost = orders[2:]
        with contextlib.closing(sqlite3.connect(ledger_path)) as db, db:
            marks = ",".join("?" * len(lost))
            db.execute(f"DELETE FROM payments WHERE payment_id IN ({marks})", lost)
            db.execute(f"DELETE FROM processed_events WHERE payment_id IN ({marks})", lost)

        window = Selection(provider="jodo", since=since, until=until)
        report = await events_cli.replay(settings, window, wait=10)
        assert (report.replayed, report.already_applied, report.applied_now) == (4, 2, 2)
        assert report.not_applied == report.failed == 0

        again = await events_cli.replay(settings, window, wait=10)
        assert (again.replayed, again.already_applied, again.applied_now) == (4, 4, 0)
        await asyncio.sleep(0.3)

    ledger = await Ledger.open(settings.ledger_url)
    try:
        for order, event_id in zip(orders, events, strict=True):
            payment = await ledger.get("jodo", order)
            assert payment is not None and payment.events == (event_id,)
            old = before[order]
            assert old is not None
            assert (payment.status, payment.amount) == (old.status, old.amount)
    finally:
        await ledger.close()


async def test_a_dry_run_replays_nothing(broker: Channel, test_settings: Settings) -> None:
    async with await Ledger.open(test_settings.ledger_url):
        pass
    since = from_ms(now_ms())
    await archive_event(broker, now_ms())
    await archive_event(broker, now_ms(), routing_key="jodo.order.payment.something_new")
    report = await events_cli.replay(test_settings, Selection(since=since), dry_run=True)
    assert (report.replayed, report.unhandled, report.already_applied) == (1, 1, 0)
    assert await queue_depth(broker, JODO) == 1  # the publish itself, no replayed copy


def _recent() -> Any:
    return from_ms(now_ms() - 60_000)
