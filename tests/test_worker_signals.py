"""`hookpipe worker` as a real process with the real Jodo handlers: SIGTERM drains, SIGKILL loses
nothing (another worker takes over, and every event is applied exactly once)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from hookpipe import topology
from hookpipe.settings import Settings
from hookpipe.workers.ledger import Ledger
from tests.conftest import fixture_bytes, queue_depth
from tests.worker_support import HookpipeProcess, publish_event, wait_until

WorkerProcess = HookpipeProcess

DEBITED = "jodo.order.payment.debited"
CANCELLED = "jodo.direct.payment.cancelled"
Channel = aio_pika.abc.AbstractChannel


@dataclass(frozen=True)
class Event:
    queue: str
    event_id: str
    payment_id: str
    body: bytes


def jodo_events(count: int, *, cancel_every: int = 0) -> list[Event]:
    """`count` distinct Jodo events; each `cancel_every`-th cancels a payment of its own."""
    debited = json.loads(fixture_bytes("jodo.order.payment.debited.json"))
    cancelled = json.loads(fixture_bytes("jodo.direct.payment.cancelled.json"))
    run = uuid.uuid4().hex[:6]
    events = []
    for n in range(count):
        event_id = f"evt-{run}-{n}"
        if cancel_every and n % cancel_every == 0:
            cancelled["event_id"] = event_id
            cancelled["payload"]["payment"]["id"] = f"direct_{run}_{n}"
            events.append(Event(CANCELLED, event_id, f"direct_{run}_{n}", orjson.dumps(cancelled)))
        else:
            debited["event_id"] = event_id
            debited["payload"]["order_id"] = f"order_{run}_{n}"
            events.append(Event(DEBITED, event_id, f"order_{run}_{n}", orjson.dumps(debited)))
    return events


async def publish_all(channel: Channel, events: Iterable[Event]) -> None:
    """Publish in batches: one confirm round trip per batch, not per message."""
    pending: list[Any] = []
    for event in events:
        pending.append(publish_event(channel, event.queue, event.body, event_id=event.event_id))
        if len(pending) == 100:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Makes worker processes; any still running after the test is killed."""
    made: list[WorkerProcess] = []

    def make(settings: Settings, *args: str) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(made)}.log", "worker", *args)
        made.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in made:
            await worker.ensure_gone()


async def applied_events(ledger: Ledger) -> dict[str, tuple[str, ...]]:
    """payment id -> the ids of the events applied to it."""
    return {p.payment_id: p.events for p in await ledger.list(provider="jodo")}


async def take_all(channel: Channel, queue_name: str) -> list[str]:
    """Empty a queue; the message ids it held.

    A consumer takes the messages it was told of, then basic.get whatever came back since:
    a basic.get each, a round trip each, took two seconds for the thousand left by a worker.
    """
    queue = await channel.get_queue(queue_name, ensure=False)
    ids = []
    if expected := await queue_depth(channel, queue_name):
        async with asyncio.timeout(10), queue.iterator() as messages:
            async for delivered in messages:
                ids.append(str(delivered.message_id))
                await delivered.ack()
                if len(ids) == expected:
                    break  # leaving the iterator gives back any delivered beyond, unacknowledged
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        ids.append(str(message.message_id))
    return ids


async def test_sigterm_drains_in_flight_messages_and_exits_0(
    broker: Channel,
    make_settings: Callable[..., Settings],
    spawn: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        worker_concurrency=16,
        shutdown_grace=5.0,
    )
    # Enough that the worker is still taking them when the signal comes (SQLite applies some
    # 3,000 a second batched).
    events = jodo_events(6000)
    await publish_all(broker, events)
    worker = spawn(settings, "--provider", "jodo")
    await worker.start()
    await wait_until(
        lambda: bool(worker.logged("worker started")), within=30, what="the worker's start"
    )
    ledger = await Ledger.open(settings.ledger_url)
    try:
        await wait_until(lambda: _has_payments(ledger), interval=0.01, what="a first payment")
        worker.signal(signal.SIGTERM)
        stopping_at = time.monotonic()
        assert await worker.exit_code(within=settings.shutdown_grace + 5) == 0
        assert time.monotonic() - stopping_at < settings.shutdown_grace
        applied = await applied_events(ledger)
    finally:
        await ledger.close()
    # It was stopped mid-stream, with messages in its hands.
    [stopping] = worker.logged("stopping: no new messages, draining those in flight")
    assert stopping["in_flight"] > 0
    assert worker.logged("worker stopped")
    remaining = await take_all(broker, DEBITED)
    # Every message was applied exactly once, or is still in the queue: none both, none lost.
    applied_ids = [f"jodo:{event_id}" for ids in applied.values() for event_id in ids]
    assert len(applied_ids) == len(set(applied_ids))
    assert not set(applied_ids) & set(remaining)
    assert sorted(applied_ids + remaining) == sorted(f"jodo:{e.event_id}" for e in events)
    assert remaining, "the worker finished the whole stream before SIGTERM: test proves nothing"
    assert await queue_depth(broker, topology.dlq_name(DEBITED)) == 0


async def _has_payments(ledger: Ledger) -> bool:
    return bool(await ledger.list(provider="jodo", limit=1))


async def test_sigkill_mid_stream_then_another_worker_applies_every_event_exactly_once(
    broker: Channel,
    make_settings: Callable[..., Settings],
    spawn: Callable[..., WorkerProcess],
    pg_ledger_url: str,
) -> None:
    settings = make_settings(ledger_url=pg_ledger_url, worker_concurrency=16)
    events = jodo_events(1500, cancel_every=5)
    # The provider's retries: some events arrive twice.
    await publish_all(broker, [*events, *events[::10]])
    await _kill_at_then_restart(broker, settings, spawn, events, kill_at=50, within=60)


async def test_sigkill_mid_batch_then_a_restart_applies_every_event_exactly_once(
    broker: Channel,
    make_settings: Callable[..., Settings],
    spawn: Callable[..., WorkerProcess],
    ledger_url: str,
) -> None:
    # Full batches under load: the kill lands with batches being applied, committed, acked.
    settings = make_settings(
        ledger_url=ledger_url,
        worker_concurrency=32,
        ledger_batch_size=16,
        ledger_batch_wait=0.002,
    )
    events = jodo_events(2000, cancel_every=7)
    await publish_all(broker, events)
    await _kill_at_then_restart(broker, settings, spawn, events, kill_at=200, within=90)


async def _kill_at_then_restart(
    broker: Channel,
    settings: Settings,
    spawn: Callable[..., WorkerProcess],
    events: Sequence[Event],
    *,
    kill_at: int,
    within: float,
) -> None:
    """A worker SIGKILLed once `kill_at` payments are in, another started: every event applied
    exactly once (a payment per event, its one event, its status), nothing dead-lettered."""
    first = spawn(settings)
    await first.start()
    await wait_until(
        lambda: bool(first.logged("worker started")), within=30, what="the worker's start"
    )
    ledger = await Ledger.open(settings.ledger_url)
    try:
        await wait_until(
            lambda: _count_at_least(ledger, kill_at), interval=0.01, what=f"{kill_at} payments"
        )
        first.signal(signal.SIGKILL)
        assert await first.exit_code(within=5) == -signal.SIGKILL
        assert len(await applied_events(ledger)) < len(events), "nothing was left to take over"

        second = spawn(settings)
        await second.start()
        await wait_until(
            lambda: _count_at_least(ledger, len(events)), within=within, what="every event applied"
        )
        await wait_until(lambda: _queues_empty(broker), what="both queues empty")
        second.signal(signal.SIGTERM)
        assert await second.exit_code(within=settings.shutdown_grace + 5) == 0
        payments = {p.payment_id: p for p in await ledger.list(provider="jodo")}
    finally:
        await ledger.close()
    assert len(payments) == len(events)
    for event in events:
        payment = payments[event.payment_id]
        assert payment.events == (event.event_id,), event.payment_id
        assert payment.status == ("reversed" if event.queue == CANCELLED else "paid")
    for queue in (DEBITED, CANCELLED):
        assert await queue_depth(broker, topology.dlq_name(queue)) == 0


async def _count_at_least(ledger: Ledger, count: int) -> bool:
    return len(await ledger.list(provider="jodo")) >= count


async def _queues_empty(channel: Channel) -> bool:
    return (await queue_depth(channel, DEBITED), await queue_depth(channel, CANCELLED)) == (0, 0)
