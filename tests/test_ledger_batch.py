"""Group commit on real SQLite and real PostgreSQL: concurrent applies share one transaction, an
event's own failure fails it alone, the transaction's failure fails the whole batch."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.ledger import Ledger, Payment, PaymentState
from tests.test_ledger import add, apply_elsewhere, event, set_to

BATCH = 8


@pytest.fixture
def transactions() -> Iterator[Callable[[Ledger], list[int]]]:
    """Counts a ledger's write transactions: `spy(ledger)` gives a list that grows by one for
    each transaction begun. A spy on the real driver: the database is the real one."""

    def spy(ledger: Ledger) -> list[int]:
        begun: list[int] = []
        driver = ledger._driver
        real: Callable[[], AbstractAsyncContextManager[Any]] = driver.transaction

        @asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            begun.append(1)
            async with real() as db:
                yield db

        driver.transaction = counted  # type: ignore[method-assign]
        return begun

    yield spy


@pytest.fixture
async def batched(ledger_url: str) -> AsyncIterator[Ledger]:
    # A long wait: the batch closes because it is full, not because the clock ran out.
    async with await Ledger.open(ledger_url, batch_size=BATCH, batch_wait=0.5) as ledger:
        yield ledger


async def test_concurrent_applies_commit_in_one_transaction(
    batched: Ledger, transactions: Callable[[Ledger], list[int]], ledger_url: str
) -> None:
    begun = transactions(batched)

    results = await asyncio.gather(
        *(batched.apply(event(f"e{n}", f"pay_{n}"), add("1")) for n in range(BATCH))
    )

    assert results == [True] * BATCH
    assert len(begun) == 1
    payments = await batched.list()
    assert sorted((p.payment_id, p.events) for p in payments) == [
        (f"pay_{n}", (f"e{n}",)) for n in range(BATCH)
    ]
    if ledger_url.startswith("postgresql"):
        # Rows written by one transaction carry its id: the commit was one.
        connection = await asyncpg.connect(ledger_url)
        try:
            xids = await connection.fetchval(
                "SELECT count(DISTINCT xmin::text) FROM processed_events"
                " WHERE event_id = ANY($1::text[])",
                [f"e{n}" for n in range(BATCH)],
            )
        finally:
            await connection.close()
        assert xids == 1


async def test_a_batch_closes_after_its_wait(
    ledger_url: str, transactions: Callable[[Ledger], list[int]]
) -> None:
    async with await Ledger.open(ledger_url, batch_size=BATCH, batch_wait=0.01) as ledger:
        begun = transactions(ledger)
        results = await asyncio.wait_for(
            asyncio.gather(*(ledger.apply(event(f"e{n}"), add("1")) for n in range(3))), 5
        )
        payment = await ledger.get("jodo", "pay_1")

    assert results == [True] * 3
    assert len(begun) == 1
    assert payment is not None and payment.amount == Decimal(3)


async def test_events_of_one_payment_in_one_batch_build_on_each_other(batched: Ledger) -> None:
    results = await asyncio.gather(
        *(batched.apply(event(f"e{n}"), add("0.25")) for n in range(BATCH - 1)),
        batched.apply(event("e0"), add("0.25")),  # a redelivery in the same batch
    )

    assert results == [True] * (BATCH - 1) + [False]
    payment = await batched.get("jodo", "pay_1")
    assert payment is not None
    assert payment.amount == Decimal("1.75")
    assert payment.events == tuple(f"e{n}" for n in range(BATCH - 1))


def refused_value(_: Payment | None) -> PaymentState:
    """A version past a BIGINT: the database refuses the write, on every retry."""
    return dataclasses.replace(set_to("paid"), version=10**19)


def unknown_status(_: Payment | None) -> PaymentState:
    return set_to("lost")


def buggy(_: Payment | None) -> PaymentState:
    raise ZeroDivisionError


@pytest.mark.parametrize(
    ("decide", "error"),
    [
        (refused_value, PermanentError),  # the database's error, mid-write
        (unknown_status, PermanentError),  # the ledger's own check
        (buggy, ZeroDivisionError),  # a handler's bug: the caller sees it as it was
    ],
    ids=["refused-value", "unknown-status", "decide-raises"],
)
async def test_a_bad_event_fails_alone_and_its_batch_mates_are_applied(
    batched: Ledger,
    transactions: Callable[[Ledger], list[int]],
    decide: Callable[[Payment | None], PaymentState],
    error: type[Exception],
) -> None:
    begun = transactions(batched)
    results = await asyncio.gather(
        *(batched.apply(event(f"e{n}", f"pay_{n}"), add("1")) for n in range(BATCH - 1)),
        # Its payment sorts among the others': the writes before it and after it both stay.
        batched.apply(event("bad", "pay_3b"), decide),
        return_exceptions=True,
    )

    assert results[:-1] == [True] * (BATCH - 1)
    assert isinstance(results[-1], error)
    assert await batched.get("jodo", "pay_3b") is None
    assert not await batched.processed("jodo", "bad")
    payments = await batched.list()
    assert sorted((p.payment_id, p.amount, p.events) for p in payments) == [
        (f"pay_{n}", Decimal(1), (f"e{n}",)) for n in range(BATCH - 1)
    ]
    assert len(begun) <= 2  # the batch, and once more in savepoints; never one per event

    # The bad event's retry fails again, alone; the others' redeliveries change nothing.
    with pytest.raises(error):
        await batched.apply(event("bad", "pay_3b"), decide)
    assert await batched.apply(event("e0", "pay_0"), add("1")) is False


def terminate_the_ledger_connections(url: str) -> None:
    """End the ledger's PostgreSQL sessions from another connection, before returning; from a
    thread of its own, so that a decide callback (synchronous) can cut its own batch short."""

    async def terminate() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()

    thread = threading.Thread(target=asyncio.run, args=(terminate(),))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()


async def test_a_connection_lost_mid_batch_fails_every_event_then_each_applies_once(
    pg_url: str,
) -> None:
    async with await Ledger.open(pg_url, pool_size=1, batch_size=BATCH, batch_wait=0.5) as ledger:
        cut: list[int] = []

        def cutting(current: Payment | None) -> PaymentState | None:
            if not cut:
                cut.append(1)
                terminate_the_ledger_connections(pg_url)
            return add("1")(current)

        # pay_4's decide runs mid-batch: the payments are read and locked, not yet written.
        deciders = [cutting if n == 4 else add("1") for n in range(BATCH)]
        results = await asyncio.gather(
            *(ledger.apply(event(f"e{n}", f"pay_{n}"), deciders[n]) for n in range(BATCH)),
            return_exceptions=True,
        )
        assert cut
        assert all(isinstance(result, TransientError) for result in results), results
        assert await ledger.list() == []

        # The worker retries each of them: each applies once, whichever retry gets through.
        retried: list[bool] = []
        for n in range(BATCH):
            for _ in range(3):
                try:
                    retried.append(await ledger.apply(event(f"e{n}", f"pay_{n}"), add("1")))
                    break
                except TransientError:
                    continue  # the pool's connection was the one cut, and is replaced now
        payments = await ledger.list()

    assert retried == [True] * BATCH
    assert sorted((p.payment_id, p.amount, p.events) for p in payments) == [
        (f"pay_{n}", Decimal(1), (f"e{n}",)) for n in range(BATCH)
    ]


async def test_closing_applies_the_events_waiting_for_their_batch(ledger_url: str) -> None:
    ledger = await Ledger.open(ledger_url, batch_size=BATCH, batch_wait=60.0)
    waiting = [asyncio.create_task(ledger.apply(event(f"e{n}"), add("1"))) for n in range(3)]
    await asyncio.sleep(0.01)
    await ledger.close()

    assert [await task for task in waiting] == [True] * 3
    async with await Ledger.open(ledger_url) as reopened:
        payment = await reopened.get("jodo", "pay_1")
    assert payment is not None and payment.amount == Decimal(3)


async def test_a_batch_takes_one_read_and_one_write_on_postgresql(pg_ledger_url: str) -> None:
    async with await Ledger.open(pg_ledger_url, batch_size=BATCH, batch_wait=0.5) as ledger:
        await ledger.apply(event("e0", "pay_0"), add("1"))  # one payment exists, the rest are new
        statements: list[str] = []
        driver = ledger._driver
        real: Callable[[], AbstractAsyncContextManager[Any]] = driver.transaction

        @asynccontextmanager
        async def counted() -> AsyncIterator[Any]:
            async with real() as db:
                yield _Counted(db, statements)

        driver.transaction = counted  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(ledger.apply(event(f"e{n}", f"pay_{n % 4}"), add("1")) for n in range(1, BATCH + 1))
        )
        payments = await ledger.list()

    assert results == [True] * BATCH
    assert len(statements) == 2  # the locked read and the write, for 8 events of 4 payments
    assert sorted((p.payment_id, p.amount, len(p.events)) for p in payments) == [
        ("pay_0", Decimal(3), 3),
        ("pay_1", Decimal(2), 2),
        ("pay_2", Decimal(2), 2),
        ("pay_3", Decimal(2), 2),
    ]


class _Counted:
    """A ledger connection that writes down each statement it runs in `seen`."""

    def __init__(self, db: Any, seen: list[str]) -> None:
        self._db = db
        self._seen = seen

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._seen.append(sql)
        return await self._db.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._seen.append(sql)
        return await self._db.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._seen.append(sql)
        return await self._db.execute(sql, *args)


async def test_an_event_processed_under_another_payment_is_skipped_in_a_batch(
    batched: Ledger,
) -> None:
    assert await batched.apply(event("moved", "pay_a"), add("1")) is True

    results = await asyncio.gather(
        *(batched.apply(event(f"e{n}", f"pay_{n}"), add("1")) for n in range(BATCH - 1)),
        batched.apply(event("moved", "pay_b"), add("5")),  # its id is pay_a's event already
    )

    assert results == [True] * (BATCH - 1) + [False]
    assert await batched.get("jodo", "pay_b") is None
    payment = await batched.get("jodo", "pay_a")
    assert payment is not None and payment.amount == Decimal(1)
    assert len(await batched.list()) == BATCH


async def test_postgresql_a_payment_created_meanwhile_is_read_again_in_a_batch(
    pg_ledger_url: str,
) -> None:
    async with await Ledger.open(pg_ledger_url, batch_size=BATCH, batch_wait=0.5) as ledger:
        seen: list[Decimal | None] = []

        def decide(current: Payment | None) -> PaymentState | None:
            seen.append(None if current is None else current.amount)
            if len(seen) == 1:
                # Another worker creates the payment after this batch read it as missing.
                apply_elsewhere(pg_ledger_url, event("other", "pay_new"), add("10"))
            return add("100")(current)

        results = await asyncio.gather(
            *(ledger.apply(event(f"e{n}", f"pay_{n}"), add("1")) for n in range(BATCH - 1)),
            ledger.apply(event("mine", "pay_new"), decide),
        )
        payment = await ledger.get("jodo", "pay_new")
        others = await ledger.list()

    assert results == [True] * BATCH
    assert seen[0] is None and seen[-1] == Decimal(10)  # decided again on the row written
    assert payment is not None and payment.amount == Decimal(110)
    assert payment.events == ("other", "mine")
    assert len(others) == BATCH


async def test_a_batch_keeps_every_value_as_it_was_given(batched: Ledger) -> None:
    details = {"note": 'Zoë "quoted" \\ back\nslash', "nested": {"list": [1, 2.5, None, "₹"]}}
    results = await asyncio.gather(
        batched.apply(event("e0", "pay_a"), lambda _: set_to("paid", "10000.0", **details)),
        batched.apply(event("e1", "pay_b"), lambda _: set_to("refunded", None)),
        batched.apply(event("e2", "pay_c"), lambda _: None),  # an event before its payment
    )
    a, b, c = [await batched.get("jodo", f"pay_{x}") for x in "abc"]

    assert list(results) == [True, True, True]
    assert a is not None and (a.status, format(a.amount, "f"), a.details) == (
        "paid",
        "10000.0",
        details,
    )
    assert b is not None and (b.status, b.amount, b.details) == ("refunded", None, {})
    assert c is None and await batched.processed("jodo", "e2")
    applied = await batched.applied("jodo", "e0")
    assert applied is not None
    assert (applied.payment_id, applied.status, applied.received_at_ms) == (
        "pay_a",
        "paid",
        1_700_000_000_000,
    )
