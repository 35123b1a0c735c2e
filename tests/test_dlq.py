"""`hookpipe dlq`: list, show, replay and purge dead letters against the real RabbitMQ.

Most tests put dead letters in a DLQ as a worker does (the same headers) and look at what the
operations leave behind; one has the real worker dead-letter DreamClass messages for want of the
DreamClass API, then replays them once the API is there. The CLI is run as a user runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import aio_pika
import orjson
import pytest

from hookpipe import constants as c
from hookpipe import personal, topology
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.workers import dlq_ops
from hookpipe.workers.dlq_exporter import DlqExporter
from hookpipe.workers.dlq_letter import shown_body
from hookpipe.workers.dlq_select import ReplayFilter
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.ledger import Ledger
from hookpipe.workers.runtime import Worker
from tests.conftest import fixture_bytes, queue_depth
from tests.dreamclass_fake import FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture
from tests.ingress_support import Ingress, dreamclass_body, signed
from tests.worker_support import publish_event, run_cli, subprocess_env, wait_until

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel
Q = "flexprice.payment.failed"
DLQ = topology.dlq_name(Q)
HOUR_MS = 3_600_000


async def dead_letter(
    channel: Channel,
    event_id: str,
    *,
    queue: str = Q,
    event_type: str | None = None,
    failed_ms_ago: int = 0,
    error: str = "the database is restarting",
) -> None:
    """Put a message in `queue`'s DLQ with the headers the worker gives a dead letter."""
    provider, _, default_type = queue.partition(".")
    failed_at = time.time_ns() // 1_000_000 - failed_ms_ago
    message = aio_pika.Message(
        orjson.dumps({"id": event_id, "customer_email": "ada@example.com"}),
        message_id=f"{provider}:{event_id}",
        type=event_type or default_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers={
            c.HEADER_ATTEMPT: 6,
            c.HEADER_QUEUE: queue,
            c.HEADER_ERROR_TYPE: "TransientError",
            c.HEADER_ERROR: error,
            c.HEADER_FIRST_FAILURE: failed_at - 60_000,
            c.HEADER_LAST_FAILURE: failed_at,
            c.HEADER_WORKER: "worker@test[1]",
        },
    )
    await channel.default_exchange.publish(message, routing_key=topology.dlq_name(queue))


async def message_ids(channel: Channel, queue: str) -> list[str]:
    """Every message id of a queue, in order, taking them out."""
    found = []
    queue_ = await channel.get_queue(queue, ensure=False)
    while (message := await queue_.get(no_ack=True, fail=False)) is not None:
        found.append(str(message.message_id))
    return found


def ids(*numbers: int) -> list[str]:
    return [f"flexprice:evt-{n}" for n in numbers]


@pytest.fixture
async def six(broker: Channel) -> Channel:
    """Six dead letters: evt-0..5; odd ones are payment.success, evt-0 and evt-1 failed 2 h ago."""
    for n in range(6):
        await dead_letter(
            broker,
            f"evt-{n}",
            event_type="payment.success" if n % 2 else None,
            failed_ms_ago=2 * HOUR_MS if n < 2 else 0,
        )
    return broker


# --- list and show ---------------------------------------------------------------------------


async def test_list_counts_each_dlq_and_ages_its_oldest(
    six: Channel, test_settings: Settings
) -> None:
    summaries = {s.queue: s for s in await dlq_ops.list_dlqs(test_settings)}

    assert set(summaries) == {*handled_queues(), c.UNROUTED_QUEUE}
    assert summaries[Q].messages == 6
    oldest = summaries[Q].oldest_failed_at
    assert oldest is not None
    assert (
        timedelta(hours=1, minutes=59) < datetime.now(UTC) - oldest < timedelta(hours=2, minutes=1)
    )
    assert summaries["jodo.order.payment.debited"].messages == 0
    assert summaries["jodo.order.payment.debited"].oldest_failed_at is None
    assert await queue_depth(six, DLQ) == 6


async def test_show_reads_the_reasons_and_removes_nothing(
    six: Channel, test_settings: Settings
) -> None:
    total, letters = await dlq_ops.show(test_settings, Q, limit=4)

    assert total == 6
    assert [f"{letter.provider}:{letter.event_id}" for letter in letters] == ids(0, 1, 2, 3)
    first = letters[0]
    assert (first.error_type, first.error, first.attempts) == (
        "TransientError",
        "the database is restarting",
        6,
    )
    assert first.first_failure is not None and first.last_failure is not None
    assert first.last_failure - first.first_failure == timedelta(minutes=1)
    assert letters[1].event_type == "payment.success"
    # Masked unless revealed.
    assert shown_body(first.body)["customer_email"] == personal.MASK
    assert "ada@example.com" in shown_body(first.body, reveal=True)
    assert await message_ids(six, DLQ) == ids(0, 1, 2, 3, 4, 5)


# --- hookpipe.unrouted -----------------------------------------------------------------------

UNROUTED = c.UNROUTED_QUEUE
# An event type no provider module handles: the alternate exchange takes it.
UNHANDLED = "jodo.order.refund.created"


async def unrouted(channel: Channel, event_id: str, key: str = UNHANDLED) -> None:
    """Publish as the ingress does to a routing key no queue is bound for."""
    body = orjson.dumps({"event_id": event_id, "order": {"email": "ada@example.com"}})
    await publish_event(channel, key, body, event_id=event_id)


async def test_an_unrouted_webhook_from_the_ingress_shows_in_list(
    broker: Channel, ingress: Ingress, test_settings: Settings
) -> None:
    seed = orjson.loads(fixture_bytes("jodo.order.payment.debited.json"))
    seed["event_id"], seed["event"] = "evt-refund", "order.refund.created"
    body, headers = signed("jodo", orjson.dumps(seed))

    response = await ingress.post("jodo", body, headers)

    assert response.status == 200
    await wait_until(lambda: _depth_is(broker, UNROUTED, 1), what="the webhook in " + UNROUTED)
    summaries = {s.dlq: s for s in await dlq_ops.list_dlqs(test_settings)}
    assert summaries[UNROUTED].messages == 1
    received = summaries[UNROUTED].oldest_failed_at
    assert received is not None and datetime.now(UTC) - received < timedelta(seconds=30)
    [letter] = (await dlq_ops.show(test_settings, UNROUTED))[1]
    assert (letter.queue, letter.dead_lettered_by, letter.error_type) == (
        UNHANDLED,
        "unrouted",
        "unrouted",
    )
    assert letter.event_id == "evt-refund"
    assert "no handler" in str(letter.error)


async def test_unrouted_messages_are_shown_masked(broker: Channel, test_settings: Settings) -> None:
    await unrouted(broker, "evt-u1")

    code, out, _ = await run_cli(test_settings, "dlq", "show", "--queue", UNROUTED)

    assert code == 0
    assert "evt-u1" in out and UNHANDLED in out
    assert "ada@example.com" not in out
    assert await queue_depth(broker, UNROUTED) == 1


async def test_replay_moves_unrouted_messages_once_their_queue_is_handled(
    broker: Channel, test_settings: Settings
) -> None:
    events = await broker.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
    queue = await broker.get_queue(Q, ensure=False)
    # As before its handler shipped: no queue bound for the type when the webhook came.
    await queue.unbind(events, Q)
    try:
        await unrouted(broker, "evt-early", key=Q)
        await unrouted(broker, "evt-other")
    finally:
        await queue.bind(events, Q)
    steps: list[dlq_ops.ReplayStep] = []

    report = await dlq_ops.replay(test_settings, UNROUTED, on_step=steps.append)

    assert (report.moved, report.kept, report.no_handler, report.failed) == (1, 1, 1, 0)
    assert [(s.action, s.reason) for s in steps] == [("moved", None), ("kept", "no-handler")]
    [moved] = [m async for m in _drain(broker, Q)]
    assert moved.message_id == "flexprice:evt-early"
    assert moved.headers[c.HEADER_REPLAY_COUNT] == 1
    assert moved.headers[c.HEADER_ATTEMPT] == 0
    # Still no handler for the other: it stays, in its place, for a later replay.
    assert await message_ids(broker, UNROUTED) == ["jodo:evt-other"]


async def test_replay_of_an_unrouted_message_whose_queue_is_missing_keeps_it(
    broker: Channel, test_settings: Settings
) -> None:
    events = await broker.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
    requeue = await broker.get_exchange(c.REQUEUE_EXCHANGE, ensure=False)
    queue = await broker.get_queue(Q, ensure=False)
    # This installation has the handler; the broker has no queue bound for it yet.
    await queue.unbind(events, Q)
    await queue.unbind(requeue, Q)
    try:
        await unrouted(broker, "evt-early", key=Q)
        report = await dlq_ops.replay(test_settings, UNROUTED)
    finally:
        await queue.bind(requeue, Q)
        await queue.bind(events, Q)

    assert (report.moved, report.failed) == (0, 1)
    assert "topology declare" in report.errors[0]
    assert await message_ids(broker, UNROUTED) == ["flexprice:evt-early"]
    assert await queue_depth(broker, Q) == 0


async def test_cli_lists_and_purges_unrouted(broker: Channel, test_settings: Settings) -> None:
    for n in range(3):
        await unrouted(broker, f"evt-u{n}")

    code, out, _ = await run_cli(test_settings, "dlq", "list", "--json")

    assert code == 0
    [line] = [orjson.loads(x) for x in out.splitlines() if orjson.loads(x)["dlq"] == UNROUTED]
    assert (line["kind"], line["messages"]) == ("unrouted", 3)
    assert 0 <= line["oldest_age_seconds"] < 30

    code, out, _ = await run_cli(test_settings, "dlq", "list")
    assert code == 0 and UNROUTED in out

    code, out, _ = await run_cli(test_settings, "dlq", "purge", "--queue", UNROUTED, "--yes")
    assert code == 0
    assert f"{UNROUTED}: deleted 3" in out
    assert await queue_depth(broker, UNROUTED) == 0


async def _drain(
    channel: Channel, name: str
) -> AsyncIterator[aio_pika.abc.AbstractIncomingMessage]:
    queue = await channel.get_queue(name, ensure=False)
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        yield message


# --- replay ----------------------------------------------------------------------------------


async def test_replay_moves_everything_to_its_queue_reset_and_marked(
    six: Channel, test_settings: Settings
) -> None:
    report = await dlq_ops.replay(test_settings, Q)

    assert (report.moved, report.kept, report.failed, report.interrupted) == (6, 0, 0, False)
    assert await queue_depth(six, DLQ) == 0
    queue = await six.get_queue(Q, ensure=False)
    moved = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        moved.append(message)
    assert [m.message_id for m in moved] == ids(0, 1, 2, 3, 4, 5)
    headers = moved[0].headers
    assert headers[c.HEADER_ATTEMPT] == 0
    assert headers[c.HEADER_REPLAY_COUNT] == 1
    assert abs(int(str(headers[c.HEADER_REPLAYED_AT])) - time.time() * 1000) < 10_000
    assert c.HEADER_ERROR not in headers
    assert c.HEADER_LAST_FAILURE not in headers
    assert moved[0].body == orjson.dumps({"id": "evt-0", "customer_email": "ada@example.com"})


async def test_replay_by_event_type_keeps_the_rest_in_order(
    six: Channel, test_settings: Settings
) -> None:
    report = await dlq_ops.replay(test_settings, Q, ReplayFilter(event_type="payment.success"))

    assert (report.moved, report.kept) == (3, 3)
    assert await message_ids(six, Q) == ids(1, 3, 5)
    assert await message_ids(six, DLQ) == ids(0, 2, 4)


async def test_replay_since_moves_only_the_recent_failures(
    six: Channel, test_settings: Settings
) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)

    report = await dlq_ops.replay(test_settings, Q, ReplayFilter(since=since))

    assert (report.moved, report.kept) == (4, 2)
    assert await message_ids(six, Q) == ids(2, 3, 4, 5)
    assert await message_ids(six, DLQ) == ids(0, 1)


async def test_replay_limit_moves_the_first_n_and_keeps_the_rest_in_order(
    six: Channel, test_settings: Settings
) -> None:
    report = await dlq_ops.replay(
        test_settings, Q, ReplayFilter(event_type="payment.failed", limit=2)
    )

    assert report.moved == 2
    assert await message_ids(six, Q) == ids(0, 2)
    assert await message_ids(six, DLQ) == ids(1, 3, 4, 5)


async def test_dry_run_says_what_would_move_and_moves_nothing(
    six: Channel, test_settings: Settings
) -> None:
    steps: list[dlq_ops.ReplayStep] = []

    report = await dlq_ops.replay(
        test_settings,
        Q,
        ReplayFilter(event_type="payment.success"),
        dry_run=True,
        on_step=steps.append,
    )

    assert (report.moved, report.would_move, report.kept) == (0, 3, 3)
    assert [s.action for s in steps] == ["kept", "would-move"] * 3
    assert await queue_depth(six, Q) == 0
    assert await message_ids(six, DLQ) == ids(0, 1, 2, 3, 4, 5)


async def test_replay_keeps_to_the_rate(six: Channel, test_settings: Settings) -> None:
    started = time.monotonic()

    report = await dlq_ops.replay(test_settings, Q, rate=10)

    elapsed = time.monotonic() - started
    assert report.moved == 6
    # Six messages at 10 per second: the last may go 0.5 s after the first, not sooner.
    assert elapsed >= 0.5
    assert elapsed < 3


async def test_a_stop_midway_leaves_each_message_in_exactly_one_place(
    six: Channel, test_settings: Settings
) -> None:
    stop = asyncio.Event()
    moved: list[str] = []

    def on_step(step: dlq_ops.ReplayStep) -> None:
        if step.action == "moved":
            moved.append(str(step.letter.message_id))
            if len(moved) == 2:
                stop.set()

    report = await dlq_ops.replay(test_settings, Q, stop=stop, on_step=on_step)

    assert report.interrupted
    assert report.moved == 2
    assert await message_ids(six, Q) == ids(0, 1)
    assert await message_ids(six, DLQ) == ids(2, 3, 4, 5)


# --- purge -----------------------------------------------------------------------------------


async def test_purge_older_than_removes_only_the_old_ones(
    six: Channel, test_settings: Settings
) -> None:
    report = await dlq_ops.purge(test_settings, Q, older_than=timedelta(hours=1))

    assert (report.removed, report.kept) == (2, 4)
    assert await message_ids(six, DLQ) == ids(2, 3, 4, 5)


async def test_purge_asks_first_and_a_no_removes_nothing(
    six: Channel, test_settings: Settings
) -> None:
    asked: list[int] = []

    async def no(count: int) -> bool:
        asked.append(count)
        return False

    report = await dlq_ops.purge(test_settings, Q, confirm=no)

    assert asked == [6]
    assert report.removed == 0
    assert await queue_depth(six, DLQ) == 6


# --- with the real worker --------------------------------------------------------------------


DC_QUEUE = "dreamclass.PAYMENT_CREATED"


async def test_dead_letters_of_a_missing_api_reach_the_ledger_once_after_the_fix(
    broker: Channel,
    make_settings: Callable[..., Settings],
    ledger_url: str,
    dreamclass_fake: FakeDreamClass,
) -> None:
    unconfigured = make_settings(ledger_url=ledger_url)
    events = {"evt-dc-1": 5, "evt-dc-2": 6}
    for event_id, payment_id in events.items():
        await publish_event(
            broker, DC_QUEUE, _payment_body(event_id, payment_id), event_id=event_id
        )
    async with open_handlers(unconfigured) as handlers, Worker(unconfigured, handlers):
        await wait_until(
            lambda: _depth_is(broker, topology.dlq_name(DC_QUEUE), 2), what="two dead letters"
        )
    [summary] = await dlq_ops.list_dlqs(unconfigured, [DC_QUEUE])
    assert summary.messages == 2
    _, letters = await dlq_ops.show(unconfigured, DC_QUEUE)
    assert all("DreamClass API not configured" in str(letter.error) for letter in letters)

    # The cause fixed: the API configured, the payments there.
    for payment_id in events.values():
        dreamclass_fake.add_payment(16, payment_id, amount="300.00", status=1)
    configured = dreamclass_fake.settings(unconfigured)
    ledger = await Ledger.open(ledger_url)
    try:
        async with open_handlers(configured) as handlers, Worker(configured, handlers) as worker:
            report = await dlq_ops.replay(configured, DC_QUEUE)
            assert report.moved == 2
            await wait_until(lambda: _paid(ledger, "5", "6"), what="both payments recorded")
            # The same dead letter replayed again (an operator's second try) changes nothing.
            before = await ledger.get("dreamclass", "5")
            await publish_event(broker, DC_QUEUE, _payment_body("evt-dc-1", 5), event_id="evt-dc-1")
            await wait_until(
                lambda: _processed(worker, DC_QUEUE) == 3, what="the second try handled"
            )
            assert await ledger.get("dreamclass", "5") == before
        payment = await ledger.get("dreamclass", "5")
        assert payment is not None and payment.events == ("evt-dc-1:PAYMENT_CREATED",)
    finally:
        await ledger.close()
    assert await queue_depth(broker, topology.dlq_name(DC_QUEUE)) == 0


def _payment_body(event_id: str, payment_id: int) -> bytes:
    """The DreamClass seed as event `event_id` about payment `payment_id`."""
    body = orjson.loads(dreamclass_body(event_id=event_id))
    body["data"]["id"] = payment_id
    return orjson.dumps(body)


def _processed(worker: Worker, queue: str) -> float:
    sample = worker.metrics.registry.get_sample_value(
        "hookpipe_worker_processed_total", {"queue": queue}
    )
    return sample or 0.0


async def _depth_is(channel: Channel, queue: str, depth: int) -> bool:
    return await queue_depth(channel, queue) == depth


async def _paid(ledger: Ledger, *payment_ids: str) -> bool:
    for payment_id in payment_ids:
        payment = await ledger.get("dreamclass", payment_id)
        if payment is None or payment.status != "paid":
            return False
    return True


# --- the command, as a user runs it ----------------------------------------------------------


async def test_cli_list_json_gives_a_line_per_dlq(six: Channel, test_settings: Settings) -> None:
    code, out, _ = await run_cli(test_settings, "dlq", "list", "--json")

    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == len(handled_queues()) + 1  # and hookpipe.unrouted
    [ours] = [line for line in lines if line["dlq"] == DLQ]
    assert ours["messages"] == 6
    assert 7100 < ours["oldest_age_seconds"] < 7300


async def test_cli_show_masks_personal_data_unless_revealed(
    six: Channel, test_settings: Settings
) -> None:
    code, out, _ = await run_cli(test_settings, "dlq", "show", "--queue", DLQ, "--limit", "1")
    assert code == 0
    assert "evt-0" in out and "the database is restarting" in out
    assert "ada@example.com" not in out

    code, out, _ = await run_cli(
        test_settings, "dlq", "show", "--queue", Q, "--limit", "1", "--reveal", "--json"
    )
    assert code == 0
    [letter] = [orjson.loads(line) for line in out.splitlines()]
    assert orjson.loads(letter["body"])["customer_email"] == "ada@example.com"
    assert await queue_depth(six, DLQ) == 6


async def test_cli_replay_json_prints_each_step_and_a_summary(
    six: Channel, test_settings: Settings
) -> None:
    code, out, _ = await run_cli(
        test_settings, "dlq", "replay", "--queue", Q, "--event-type", "payment.success", "--json"
    )

    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines[-1]["summary"]["moved"] == 3
    assert lines[-1]["summary"]["kept"] == 3
    assert len(lines) == 7
    assert await message_ids(six, Q) == ids(1, 3, 5)


async def test_cli_refuses_an_unknown_queue_with_exit_2(test_settings: Settings) -> None:
    code, _, err = await run_cli(test_settings, "dlq", "show", "--queue", "jodo.nope")

    assert code == 2
    assert "not a handled queue" in err


async def test_cli_purge_without_yes_and_nobody_to_ask_refuses(
    six: Channel, test_settings: Settings
) -> None:
    code, _, err = await run_cli(test_settings, "dlq", "purge", "--queue", Q)

    assert code == 2
    assert "--yes" in err
    assert await queue_depth(six, DLQ) == 6


async def test_cli_purge_yes_says_how_many_it_removed(
    six: Channel, test_settings: Settings
) -> None:
    code, out, _ = await run_cli(test_settings, "dlq", "purge", "--queue", Q, "--yes")

    assert code == 0
    assert "6" in out
    assert await queue_depth(six, DLQ) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
async def test_a_replay_killed_midway_loses_nothing(
    broker: Channel, test_settings: Settings, signum: signal.Signals
) -> None:
    for n in range(40):
        await dead_letter(broker, f"evt-{n}")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookpipe.cli",
        "dlq",
        "replay",
        "--queue",
        Q,
        "--rate",
        "20",
        "--json",
        env=subprocess_env(test_settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    moved = 0
    while moved < 5:
        line = orjson.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        moved += line.get("action") == "moved"
    os.kill(process.pid, signum)
    out, _ = await asyncio.wait_for(process.communicate(), 15)

    in_queue = await message_ids(broker, Q)
    # The broker gives back what the dead client held once it sees the connection gone.
    await wait_until(
        lambda: _at_least(broker, DLQ, 40 - len(in_queue)), what="the DLQ's messages back"
    )
    in_dlq = await message_ids(broker, DLQ)
    everything = ids(*range(40))
    assert 5 <= len(in_queue) < 40
    if signum == signal.SIGINT:
        # Stopped cleanly: exit 130, a summary that says how far it got, no message twice.
        assert process.returncode == 130
        summary = orjson.loads(out.splitlines()[-1])["summary"]
        assert summary["moved"] == len(in_queue)
        assert summary["interrupted"] is True
        assert sorted(in_queue + in_dlq) == sorted(everything)
        assert in_queue == everything[: len(in_queue)]
    else:
        # Killed: a message confirmed but not yet acknowledged may be in both; none is lost.
        assert set(in_queue) | set(in_dlq) == set(everything)
        assert len(in_queue) + len(in_dlq) <= 41


async def _at_least(channel: Channel, queue: str, depth: int) -> bool:
    return await queue_depth(channel, queue) >= depth


# --- why, counted ----------------------------------------------------------------------------


async def test_the_real_handlers_count_each_dead_letter_by_reason(
    broker: Channel, test_settings: Settings
) -> None:
    queue = "jodo.order.payment.debited"
    seed = orjson.loads(fixture_bytes(f"{queue}.json"))
    seed["payload"]["order"]["paid_at"] = 17  # a number where a time must be
    async with open_handlers(test_settings) as handlers, Worker(test_settings, handlers) as worker:
        await publish_event(broker, queue, b"{not json", event_id="evt-garbled")
        await publish_event(broker, queue, orjson.dumps(seed), event_id="evt-invalid")
        await publish_event(broker, queue, event_id="", message_id=None)
        await wait_until(
            lambda: _depth_is(broker, topology.dlq_name(queue), 3), what="three dead letters"
        )
        await wait_until(lambda: _dead_lettered(worker, queue) == 3, what="three counted")
    assert {
        reason: _dead_lettered(worker, queue, reason)
        for reason in ("undecodable", "invalid", "malformed")
    } == {"undecodable": 1, "invalid": 1, "malformed": 1}


def _dead_lettered(worker: Worker, queue: str, reason: str | None = None) -> float:
    return sum(
        sample.value
        for family in worker.metrics.registry.collect()
        if family.name == "hookpipe_worker_dead_lettered"
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels["queue"] == queue
        and reason in (None, sample.labels["reason"])
    )


# --- the exporter ----------------------------------------------------------------------------


async def test_the_exporter_ages_each_dlq_and_unrouted_and_moves_nothing(
    six: Channel, test_settings: Settings
) -> None:
    await unrouted(six, "evt-u1")
    exporter = DlqExporter(test_settings)

    await exporter.scan()

    def gauge(name: str, dlq: str) -> float:
        value = exporter.registry.get_sample_value(name, {"dlq": dlq, **_q(dlq)})
        assert value is not None, (name, dlq)
        return value

    assert gauge("hookpipe_dlq_messages", DLQ) == 6
    assert 7100 < gauge("hookpipe_dlq_oldest_age_seconds", DLQ) < 7300
    assert gauge("hookpipe_dlq_messages", UNROUTED) == 1
    assert 0 <= gauge("hookpipe_dlq_oldest_age_seconds", UNROUTED) < 30
    empty = topology.dlq_name("jodo.order.payment.debited")
    assert gauge("hookpipe_dlq_messages", empty) == 0
    assert gauge("hookpipe_dlq_oldest_age_seconds", empty) == 0
    assert (exporter.registry.get_sample_value("hookpipe_dlq_last_scan_timestamp_seconds") or 0) > 0
    assert await message_ids(six, DLQ) == ids(0, 1, 2, 3, 4, 5)


async def test_the_exporter_reads_no_dlq_deeper_than_its_limit(
    six: Channel, test_settings: Settings
) -> None:
    exporter = DlqExporter(test_settings, max_scan=5, queues=[Q])

    await exporter.scan()

    [seen] = exporter.seen.values()
    assert (seen.messages, seen.oldest) == (6, None)


def _q(dlq: str) -> dict[str, str]:
    """The `queue` label of a DLQ's gauges: its handled queue, or hookpipe.unrouted."""
    return {"queue": UNROUTED if dlq == UNROUTED else topology.queue_from_dlq_name(dlq)}
