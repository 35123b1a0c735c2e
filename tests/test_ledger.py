"""The ledger on real SQLite and real PostgreSQL: exactly-once applies, exact money, migrations."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from hookpipe.workers.errors import (
    LedgerSetupError,
    LedgerStorageError,
    PermanentError,
    TransientError,
)
from hookpipe.workers.ledger import MIGRATIONS, Decide, Ledger, LedgerEvent, Payment, PaymentState
from tests.tcp_proxy import TcpProxy


@pytest.fixture(params=[1, 8], ids=["alone", "batched"])
async def ledger(ledger_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    # Every test of the ledger's contract holds for concurrent applies batched in a transaction.
    opened = await Ledger.open(ledger_url, batch_size=request.param)
    try:
        yield opened
    finally:
        await opened.close()


def event(event_id: str, payment_id: str = "pay_1", provider: str = "jodo") -> LedgerEvent:
    return LedgerEvent(
        provider=provider,
        event_id=event_id,
        event_type="order.payment.debited",
        payment_id=payment_id,
        received_at_ms=1_700_000_000_000,
    )


def set_to(status: str, amount: str | None = "100.00", **details: object) -> PaymentState:
    return PaymentState(
        status=status,
        amount=None if amount is None else Decimal(amount),
        currency="INR",
        details=details,
        version=None,
    )


def always(state: PaymentState) -> Decide:
    """A decide that sets this state, whatever the payment was."""
    return lambda _: state


def add(amount: str) -> Decide:
    """A decide that adds to the payment's amount: a lost update would show in the total."""

    def decide(current: Payment | None) -> PaymentState:
        total = Decimal(amount) + (current.amount or Decimal(0) if current else Decimal(0))
        return set_to("pending", str(total))

    return decide


async def test_apply_creates_the_payment(ledger: Ledger) -> None:
    seen: list[Payment | None] = []

    def decide(current: Payment | None) -> PaymentState:
        seen.append(current)
        return set_to("paid", "10000.0", order="A1", fees=[{"amount": Decimal("10000.0")}])

    assert await ledger.apply(event("e1"), decide) is True

    assert seen == [None]
    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert (payment.provider, payment.payment_id, payment.status) == ("jodo", "pay_1", "paid")
    assert str(payment.amount) == "10000.0"
    assert payment.currency == "INR"
    assert payment.details == {"order": "A1", "fees": [{"amount": "10000.0"}]}
    assert payment.events == ("e1",)
    assert payment.created_at.tzinfo is not None
    assert payment.created_at == payment.updated_at
    assert await ledger.processed("jodo", "e1") is True


async def test_the_same_event_twice_changes_nothing(ledger: Ledger) -> None:
    assert await ledger.apply(event("e1"), lambda _: set_to("paid", "5.00")) is True
    first = await ledger.get("jodo", "pay_1")

    calls: list[Payment | None] = []

    def decide(current: Payment | None) -> PaymentState:
        calls.append(current)
        return set_to("refunded", "1.00")

    assert await ledger.apply(event("e1"), decide) is False

    assert calls == []
    assert await ledger.get("jodo", "pay_1") == first


async def test_an_event_id_is_processed_once_even_under_another_payment_id(ledger: Ledger) -> None:
    assert await ledger.apply(event("e1", "pay_1"), lambda _: set_to("paid")) is True

    assert await ledger.apply(event("e1", "pay_2"), lambda _: set_to("paid")) is False

    assert await ledger.get("jodo", "pay_2") is None
    assert [p.payment_id for p in await ledger.list()] == ["pay_1"]


async def test_event_ids_are_per_provider(ledger: Ledger) -> None:
    assert await ledger.apply(event("e1", provider="jodo"), lambda _: set_to("paid")) is True
    assert await ledger.apply(event("e1", provider="rapyd"), lambda _: set_to("paid")) is True

    assert {p.provider for p in await ledger.list()} == {"jodo", "rapyd"}


async def test_decide_none_records_the_event_and_leaves_the_payment(ledger: Ledger) -> None:
    await ledger.apply(event("e1"), lambda _: set_to("paid", "7.50", note="kept"))
    before = await ledger.get("jodo", "pay_1")
    assert before is not None

    assert await ledger.apply(event("e2"), lambda _: None) is True

    after = await ledger.get("jodo", "pay_1")
    assert after is not None
    assert after.events == ("e1", "e2")
    assert (after.status, after.amount) == ("paid", Decimal("7.50"))
    assert after.details == {"note": "kept"}
    assert after.updated_at == before.updated_at
    assert await ledger.apply(event("e2"), lambda _: set_to("failed")) is False


async def test_decide_none_without_a_payment_records_the_event_only(ledger: Ledger) -> None:
    assert await ledger.apply(event("early"), lambda _: None) is True

    assert await ledger.get("jodo", "pay_1") is None
    assert await ledger.list() == []
    assert await ledger.processed("jodo", "early") is True
    assert await ledger.apply(event("early"), lambda _: set_to("paid")) is False

    # The payment it belongs to, once it exists, lists it among its events.
    seen: list[Payment | None] = []

    def decide(current: Payment | None) -> PaymentState:
        seen.append(current)
        return set_to("paid")

    await ledger.apply(event("later"), decide)
    payment = await ledger.get("jodo", "pay_1")
    assert seen == [None]
    assert payment is not None and payment.events == ("early", "later")


async def test_events_are_listed_oldest_first(ledger: Ledger) -> None:
    ids = [f"evt_{n:02}" for n in (5, 1, 9, 3)]
    for event_id in ids:
        await ledger.apply(event(event_id), add("1"))

    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert payment.events == tuple(ids)
    assert payment.updated_at >= payment.created_at


async def test_concurrent_applies_to_one_payment_lose_no_update(ledger: Ledger) -> None:
    count = 40
    results = await asyncio.gather(
        *(ledger.apply(event(f"e{n}"), add("0.01")) for n in range(count))
    )

    assert results == [True] * count
    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert payment.amount == Decimal("0.40")
    assert sorted(payment.events) == sorted(f"e{n}" for n in range(count))


async def test_concurrent_duplicates_apply_once(ledger: Ledger) -> None:
    results = await asyncio.gather(*(ledger.apply(event("same"), add("1")) for _ in range(10)))

    assert sorted(results) == [False] * 9 + [True]
    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert (payment.amount, payment.events) == (Decimal("1"), ("same",))


AMOUNTS = ("0.3", "10000.0", "3000.00", "12345678901234567890.123456789", "-0.01", "0", "1E+3")


async def test_amounts_are_exact(ledger: Ledger) -> None:
    for n, amount in enumerate(AMOUNTS):
        await ledger.apply(event(f"e{n}", amount), always(set_to("paid", amount)))

    for amount in AMOUNTS:
        payment = await ledger.get("jodo", amount)
        assert payment is not None
        assert payment.amount == Decimal(amount)
        # The scale the provider sent is kept too: "10000.0" does not become "10000".
        assert format(payment.amount, "f") == format(Decimal(amount), "f")


async def test_a_sum_is_stored_exactly(ledger: Ledger) -> None:
    await ledger.apply(event("e1"), add("0.1"))
    await ledger.apply(event("e2"), add("0.2"))

    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert payment.amount == Decimal("0.3")
    assert str(payment.amount) == "0.3"


async def test_a_payment_without_amount(ledger: Ledger) -> None:
    await ledger.apply(event("e1"), lambda _: set_to("deleted", None))

    payment = await ledger.get("jodo", "pay_1")
    assert payment is not None
    assert (payment.status, payment.amount) == ("deleted", None)


async def test_a_failing_decide_records_nothing(ledger: Ledger) -> None:
    def decide(current: Payment | None) -> PaymentState:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        await ledger.apply(event("e1"), decide)

    assert await ledger.processed("jodo", "e1") is False
    assert await ledger.apply(event("e1"), lambda _: set_to("paid")) is True


async def test_an_unknown_status_is_a_permanent_error(ledger: Ledger) -> None:
    with pytest.raises(PermanentError, match="unknown payment status"):
        await ledger.apply(event("e1"), lambda _: set_to("settled"))

    assert await ledger.processed("jodo", "e1") is False
    assert await ledger.get("jodo", "pay_1") is None


async def test_list_filters_and_limits(ledger: Ledger) -> None:
    await ledger.apply(event("e1", "a", "jodo"), lambda _: set_to("paid"))
    await ledger.apply(event("e2", "b", "jodo"), lambda _: set_to("reversed"))
    await ledger.apply(event("e3", "c", "rapyd"), lambda _: set_to("paid"))

    assert [p.payment_id for p in await ledger.list()] == ["c", "b", "a"]
    assert [p.payment_id for p in await ledger.list(provider="jodo")] == ["b", "a"]
    assert [p.payment_id for p in await ledger.list(status="paid")] == ["c", "a"]
    assert [p.payment_id for p in await ledger.list(provider="jodo", status="paid")] == ["a"]
    assert [p.payment_id for p in await ledger.list(limit=2)] == ["c", "b"]
    assert await ledger.list(provider="flexprice") == []


async def test_opening_twice_keeps_the_schema_and_the_data(new_database_url: str) -> None:
    first = await Ledger.open(new_database_url)
    await first.apply(event("e1"), lambda _: set_to("paid", "1.5"))
    await first.close()

    # Several processes may start at once against a new or existing database.
    again = await asyncio.gather(Ledger.open(new_database_url), Ledger.open(new_database_url))
    try:
        payment = await again[0].get("jodo", "pay_1")
        assert payment is not None and payment.amount == Decimal("1.5")
        assert await again[1].apply(event("e1"), lambda _: set_to("failed")) is False
    finally:
        for opened in again:
            await opened.close()
    assert await schema_versions(new_database_url) == list(range(1, len(MIGRATIONS) + 1))


async def schema_versions(url: str) -> list[int]:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return [row[0] for row in db.execute("SELECT version FROM schema_version")]
    connection = await asyncpg.connect(url)
    try:
        return [row[0] for row in await connection.fetch("SELECT version FROM schema_version")]
    finally:
        await connection.close()


async def test_a_relative_sqlite_path_is_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var" / "sub").mkdir(parents=True)

    async with await Ledger.open("sqlite:///var/sub/ledger.sqlite3") as ledger:
        await ledger.apply(event("e1"), lambda _: set_to("paid"))

    assert (tmp_path / "var" / "sub" / "ledger.sqlite3").is_file()


async def test_a_sqlite_directory_that_does_not_exist_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(LedgerSetupError) as caught:
        await Ledger.open("sqlite:///nonexistent/dir/ledger.db")

    message = str(caught.value)
    assert f"{tmp_path}/nonexistent/dir does not exist" in message
    assert f"relative to the working directory {tmp_path}" in message
    assert os.listdir(tmp_path) == []


async def test_a_reader_never_creates_a_sqlite_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"

    with pytest.raises(LedgerSetupError, match="a worker creates it on its first start"):
        await Ledger.open(url, create=False)

    assert os.listdir(tmp_path) == []


async def test_a_reader_neither_creates_nor_migrates_postgresql_tables(pg_url: str) -> None:
    with pytest.raises(LedgerSetupError, match="has no tables yet"):
        await Ledger.open(pg_url, create=False)

    connection = await asyncpg.connect(pg_url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    assert tables == []


async def test_a_missing_postgresql_database_says_how_to_create_it(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/hookpipe_no_such_database"

    with pytest.raises(LedgerSetupError) as caught:
        await Ledger.open(missing)

    assert "has no database 'hookpipe_no_such_database': create it (createdb" in str(caught.value)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_postgresql_refusing_connections_is_transient(refusing_port: int) -> None:
    with pytest.raises(TransientError, match=r"cannot reach 127\.0\.0\.1:\d+/ledger") as caught:
        await Ledger.open(f"postgresql://postgres:s3cret@127.0.0.1:{refusing_port}/ledger")

    assert "s3cret" not in str(caught.value)


async def test_postgresql_recovers_after_losing_its_connection(pg_url: str) -> None:
    async with await Ledger.open(pg_url, pool_size=1) as ledger:
        await ledger.apply(event("e1"), add("1"))
        admin = await asyncpg.connect(pg_url)
        try:
            terminated = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert terminated == 1

        # The lost connection shows as a TransientError (the worker retries), or the pool has
        # already replaced it; either way a retry goes through.
        for _ in range(3):
            try:
                assert await ledger.apply(event("e2"), add("1")) is True
                break
            except TransientError:
                continue
        payment = await ledger.get("jodo", "pay_1")
        assert payment is not None and payment.amount == Decimal("2")


@pytest.mark.parametrize("batch_size", [1, 8], ids=["alone", "batched"])
async def test_two_ledgers_on_one_database_lose_no_update(ledger_url: str, batch_size: int) -> None:
    # Two worker processes, each with its own connection(s), writing the same payments: batched,
    # each batch locks payments that the other's batches lock too, and creates payments that the
    # other may be creating at the same moment.
    first, second = (
        await Ledger.open(ledger_url, batch_size=batch_size),
        await Ledger.open(ledger_url, batch_size=batch_size),
    )
    try:
        results = await asyncio.gather(
            *(
                (first if n % 2 else second).apply(event(f"e{n}", f"pay_{n % 3}"), add("1"))
                for n in range(30)
            ),
            # The same events again, from the other side: each applies once in all.
            *(
                (second if n % 2 else first).apply(event(f"e{n}", f"pay_{n % 3}"), add("1"))
                for n in range(30)
            ),
        )
        payments = await first.list()
    finally:
        await first.close()
        await second.close()

    assert results.count(True) == 30
    assert sorted((p.payment_id, p.amount, len(p.events)) for p in payments) == [
        ("pay_0", Decimal(10), 10),
        ("pay_1", Decimal(10), 10),
        ("pay_2", Decimal(10), 10),
    ]


def apply_elsewhere(url: str, applied: LedgerEvent, decide: Decide) -> None:
    """Apply an event from another connection, to completion, before returning.

    Runs in a thread of its own with its own event loop, so that a decide callback (which is
    synchronous) can make another writer win the race between its read and its write.
    """

    async def other_writer() -> None:
        async with await Ledger.open(url) as other:
            assert await other.apply(applied, decide) is True

    thread = threading.Thread(target=asyncio.run, args=(other_writer(),))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.parametrize("exists", [False, True], ids=["created", "updated"])
async def test_postgresql_a_write_between_read_and_write_is_not_lost(
    pg_ledger_url: str, exists: bool
) -> None:
    async with await Ledger.open(pg_ledger_url) as ledger:
        if exists:
            await ledger.apply(event("e0"), add("1"))
        seen: list[Decimal | None] = []

        def decide(current: Payment | None) -> PaymentState | None:
            seen.append(None if current is None else current.amount)
            if len(seen) == 1:
                # Another worker writes the payment after this read: this write must not win.
                apply_elsewhere(pg_ledger_url, event("other"), add("10"))
            return add("100")(current)

        assert await ledger.apply(event("mine"), decide) is True

        payment = await ledger.get("jodo", "pay_1")
    before = Decimal(1) if exists else None
    assert seen == [before, (before or 0) + 10]  # decided again on the row the other wrote
    assert payment is not None
    assert payment.amount == (before or 0) + 110
    assert payment.events[-2:] == ("other", "mine")


async def test_a_value_the_database_refuses_is_a_permanent_error(ledger_url: str) -> None:
    # A version past a BIGINT: the same write would be refused on every retry.
    state = dataclasses.replace(set_to("paid"), version=10**19)
    async with await Ledger.open(ledger_url) as ledger:
        with pytest.raises(PermanentError, match="the ledger refused the values"):
            await ledger.apply(event("e1"), lambda _: state)

        assert await ledger.get("jodo", "pay_1") is None


async def test_a_full_sqlite_disk_is_passing_and_says_where_and_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    async with await Ledger.open(url) as ledger:
        # The file may not grow by a page more: what SQLite says when the disk is full.
        raw = ledger._driver._raw  # type: ignore[attr-defined]  # a test reaching in, on purpose
        pages = await (await raw.execute("PRAGMA page_count")).fetchone()
        await raw.execute(f"PRAGMA max_page_count = {pages[0]}")
        big = set_to("paid", note="x" * 20_000)

        with pytest.raises(LedgerStorageError) as caught:  # a TransientError: retried later
            await ledger.apply(event("e1"), lambda _: big)

    message = str(caught.value)
    assert "database or disk is full" in message
    assert str(tmp_path / "ledger.sqlite3") in message


async def test_a_silent_postgresql_network_times_out_as_passing(pg_ledger_url: str) -> None:
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        ledger = await Ledger.open(proxy.url_for(pg_ledger_url), pool_size=1, timeout=0.5)
        try:
            await ledger.apply(event("e1"), lambda _: set_to("paid"))
            proxy.freeze()  # every byte held: the server never hears, the client never learns
            started = time.monotonic()

            with pytest.raises(TransientError):
                await ledger.apply(event("e2"), lambda _: set_to("refunded"))
            with pytest.raises(TransientError):  # the pool's one connection is still held
                await ledger.apply(event("e3"), lambda _: set_to("refunded"))
            # A read says where it failed too, the port the ledger was opened with.
            with pytest.raises(TransientError, match=rf"ledger read failed \(.*:{proxy.port}/"):
                await ledger.get("jodo", "pay-1")

            assert time.monotonic() - started < 4.0
        finally:
            proxy.thaw()
            await ledger.close()
