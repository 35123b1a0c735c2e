"""The payments ledger: payments keyed by (provider, payment id), every applied event recorded.

One code path for SQLite (the zero set-up default) and PostgreSQL (production): the same SQL and
the same logic, with a thin driver for what differs (placeholders, column types, locking, how
many round trips a write takes). `Ledger.apply` is the only writer; it makes an event's effect and
its "event processed" row one atomic write, so an event applied twice changes nothing the second
time.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
import re
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiosqlite
import asyncpg
import msgspec

from hookpipe import tracing
from hookpipe.workers.errors import (
    LedgerSetupError,
    LedgerStorageError,
    PermanentError,
    TransientError,
)
from hookpipe.workers.group_commit import GroupCommit

STATUSES: Final = ("paid", "pending", "failed", "refunded", "reversed", "deleted", "invalid")


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What a handler decides a payment now is."""

    status: str  # one of STATUSES
    amount: Decimal | None
    currency: str | None
    # JSON-able and provider-specific; never personal data. Decimals come back as strings.
    details: Mapping[str, Any]
    # The provider's time of this state (ms since the epoch), so that an older update can be
    # refused when it arrives after a newer one.
    version: int | None


@dataclass(frozen=True, slots=True)
class Payment(PaymentState):
    """A row of the ledger."""

    provider: str
    payment_id: str
    events: tuple[str, ...]  # ids of the events applied to it, oldest first
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """The event being applied."""

    provider: str
    event_id: str
    event_type: str
    payment_id: str
    received_at_ms: int | None


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """What the ledger recorded of an event it applied."""

    provider: str
    event_id: str
    payment_id: str
    event_type: str
    status: str | None  # the payment's status once the event was applied
    received_at_ms: int | None
    applied_at: datetime


Decide = Callable[[Payment | None], PaymentState | None]

# Schema changes, in order; each runs once, in the transaction that records its number in
# schema_version. Never edit a released step: append a new one. {amount}, {json} and {time} are
# the driver's column types.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE payments (
        provider TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        -- NULL while the row only lists events that came before the payment itself.
        status TEXT,
        amount {amount},
        currency TEXT,
        details {json} NOT NULL,
        version BIGINT,
        events {json} NOT NULL,
        created_at {time} NOT NULL,
        updated_at {time} NOT NULL,
        -- Bumped by every write: a write checks it to know the row is still as it was read.
        revision BIGINT NOT NULL,
        PRIMARY KEY (provider, payment_id)
    );
    CREATE TABLE processed_events (
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        status TEXT,  -- the payment's status once the event was applied
        received_at_ms BIGINT,
        applied_at {time} NOT NULL,
        PRIMARY KEY (provider, event_id)
    );
    """,
)

_COLUMNS: Final = (
    "status, amount, currency, details, version, events, created_at, updated_at, revision"
)
_READ_PAYMENT: Final = f"SELECT {_COLUMNS} FROM payments WHERE provider = $1 AND payment_id = $2"
_GET_PAYMENT: Final = _READ_PAYMENT + " AND status IS NOT NULL"
_PROCESSED: Final = "SELECT 1 FROM processed_events WHERE provider = $1 AND event_id = $2"
_APPLIED_EVENT: Final = (
    "SELECT event_id, payment_id, event_type, status, received_at_ms, applied_at"
    " FROM processed_events WHERE provider = $1 AND event_id IN ($2, $3)"
)
_SCHEMA_VERSION: Final = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# The statements that write an event's row or a payment's, each from the parameters named by
# number: apply()'s and a batch's rows hold the same values in different places.
_EVENT_COLUMNS: Final = (
    "provider, event_id, payment_id, event_type, status, received_at_ms, applied_at"
)
# The revision aside: a write sets or bumps it.
_PAYMENT_VALUES: Final = tuple(_COLUMNS.split(", ")[:-1])


def _placeholders(numbers: Sequence[int]) -> str:
    return ", ".join(f"${n}" for n in numbers)


def _record_event(numbers: Sequence[int]) -> str:
    """Record an event, unless its (provider, event id) is recorded already: _EVENT_COLUMNS."""
    return f"""
    INSERT INTO processed_events ({_EVENT_COLUMNS})
    VALUES ({_placeholders(numbers)})
    ON CONFLICT (provider, event_id) DO NOTHING
"""


def _insert_payment(numbers: Sequence[int]) -> str:
    """A new payment at revision 1: provider, payment id, then _PAYMENT_VALUES."""
    return f"""
    INSERT INTO payments (provider, payment_id, {_COLUMNS})
    VALUES ({_placeholders(numbers)}, 1)
"""


def _update_payment(numbers: Sequence[int]) -> str:
    """A payment's _PAYMENT_VALUES, its revision bumped; $1 and $2 its provider and id."""
    values = ", ".join(
        f"{column} = ${n}" for column, n in zip(_PAYMENT_VALUES, numbers, strict=True)
    )
    return f"""
    UPDATE payments
    SET {values}, revision = revision + 1
    WHERE provider = $1 AND payment_id = $2
"""


# The write of apply(). Its parameters, shared by every statement below:
# $1 provider, $2 payment_id, $3 event_id, $4 event_type, $5 status, $6 received_at_ms,
# $7 applied_at, $8 amount, $9 currency, $10 details, $11 version, $12 events, $13 created_at,
# $14 updated_at, $15 the revision that was read (an update only).
# It records the event and writes the payment, or does neither: the event was processed already
# (under this payment id or another), or the payment changed since it was read.
_RECORD_EVENT: Final = _record_event((1, 3, 2, 4, 5, 6, 7)) + "    RETURNING 1\n"
_INSERT_PAYMENT: Final = _insert_payment((1, 2, 5, 8, 9, 10, 11, 12, 13, 14))
_CHECK_REVISION: Final = (
    "SELECT 1 FROM payments WHERE provider = $1 AND payment_id = $2 AND revision = $15"
)
_UPDATE_PAYMENT: Final = _update_payment((5, 8, 9, 10, 11, 12, 13, 14))
# On PostgreSQL the same steps make one statement, so one round trip. The event row is written
# only once the payment row is locked at the revision read, and the payment only once the event
# row is; a payment inserted meanwhile by someone else fails the INSERT on the primary key,
# which undoes the whole statement.
_PG_WRITE_NEW: Final = f"""
    WITH recorded AS ({_RECORD_EVENT}),
    written AS (
        INSERT INTO payments (provider, payment_id, {_COLUMNS})
        SELECT $1, $2, $5, $8, $9, $10, $11, $12, $13, $14, 1 FROM recorded
        RETURNING 1
    )
    SELECT TRUE, EXISTS (SELECT 1 FROM recorded)
"""
_PG_WRITE_EXISTING: Final = f"""
    WITH unchanged AS ({_CHECK_REVISION} FOR UPDATE),
    recorded AS (
        INSERT INTO processed_events ({_EVENT_COLUMNS})
        SELECT $1, $3, $2, $4, $5, $6, $7 FROM unchanged
        ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING 1
    ),
    written AS ({_UPDATE_PAYMENT} AND EXISTS (SELECT 1 FROM recorded) RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM unchanged), EXISTS (SELECT 1 FROM recorded)
"""

# A batch's writes, the same on both databases but for how many statements they take. An event
# row: _EVENT_COLUMNS. A payment row: provider, payment_id, then _PAYMENT_VALUES.
_BATCH_RECORD_EVENT: Final = _record_event(range(1, 8))
_BATCH_INSERT_PAYMENT: Final = _insert_payment(range(1, 11))
_BATCH_UPDATE_PAYMENT: Final = _update_payment(range(3, 11))
# On PostgreSQL a batch reads its payments in one statement and writes them in one more (its
# rows as JSON, below): four round trips a batch (with BEGIN and COMMIT), whatever its size.
# The read takes the row locks in the order of the bytes ("C"), which is the order of Python's
# str (code points): the order every batch and every lone apply takes them in.
_PG_READ_LOCKED: Final = f"""
    SELECT provider, payment_id, {_COLUMNS} FROM payments
    WHERE (provider, payment_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
    ORDER BY provider COLLATE "C", payment_id COLLATE "C"
    FOR UPDATE
"""
# The payments are written only if every event was recorded: an event missing was processed
# already under another payment, so the rows computed with it are wrong; the caller undoes the
# transaction then. A payment inserted meanwhile by someone else fails the whole statement.
# Its rows come as two JSON documents, an array of objects each ($1 the events, $2 the payments)
# that the server takes apart: one value each to encode, where column arrays cost the worker an
# encoding per value (a quarter of its time went into the driver).
_PG_WRITE_BATCH: Final = f"""
    WITH recorded AS (
        INSERT INTO processed_events ({_EVENT_COLUMNS})
        SELECT * FROM json_to_recordset($1::json) AS e(
            provider text, event_id text, payment_id text, event_type text, status text,
            received_at_ms bigint, applied_at timestamptz
        )
        ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING 1
    ),
    complete AS (SELECT count(*) = json_array_length($1::json) AS ok FROM recorded),
    rows AS (
        SELECT * FROM json_to_recordset($2::json) AS r(
            new boolean, provider text, payment_id text, status text, amount numeric,
            currency text, details jsonb, version bigint, events jsonb, created_at timestamptz,
            updated_at timestamptz
        )
        WHERE (SELECT ok FROM complete)
    ),
    inserted AS (
        INSERT INTO payments (provider, payment_id, {_COLUMNS})
        SELECT provider, payment_id, status, amount, currency, details, version, events,
               created_at, updated_at, 1
        FROM rows WHERE new
    ),
    updated AS (
        UPDATE payments AS p
        SET status = r.status, amount = r.amount, currency = r.currency, details = r.details,
            version = r.version, events = r.events, created_at = r.created_at,
            updated_at = r.updated_at, revision = p.revision + 1
        FROM rows AS r
        WHERE NOT r.new AND p.provider = r.provider AND p.payment_id = r.payment_id
    )
    SELECT ok FROM complete
"""

# apply() first reads and writes without a lock (two round trips on PostgreSQL); when the payment
# changed in between, it starts again holding the payment's row lock, which can fail only while
# two first events race to create the payment.
_APPLY_ATTEMPTS: Final = 4
# A batch undone by a deadlock runs again at once, up to this many times in all.
_BATCH_ATTEMPTS: Final = 4

_json_encode = msgspec.json.Encoder().encode  # Decimal as an exact string, datetime as RFC 3339
_json_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_json_decode_events = msgspec.json.Decoder(tuple[str, ...]).decode


class _Conflict(Exception):
    """The payment changed between apply()'s read and its write: start again."""


class _Isolate(Exception):
    """An event of a batch failed of its own: run the batch again, an event per savepoint."""


class _Connection(Protocol):
    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...
    async def fetch(self, sql: str, *args: Any) -> builtins.list[Sequence[Any]]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


class _Driver(Protocol):
    """What differs between the databases; everything else is the Ledger's."""

    @property
    def column_types(self) -> Mapping[str, str]: ...

    def connection(self) -> AbstractAsyncContextManager[_Connection]:
        """A connection for reads; statements commit one by one."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[_Connection]:
        """A connection in a transaction that may write; it commits on leaving, or rolls back."""
        ...

    def writer(self, locked: bool) -> AbstractAsyncContextManager[_Connection]:
        """Where apply() reads and writes; `locked`: holding the payment row lock from the read."""
        ...

    def for_update(self, locked: bool) -> str:
        """What apply()'s read ends with to take the payment's row lock."""
        ...

    async def write(self, connection: _Connection, new: bool, args: Sequence[Any]) -> bool:
        """Record the event and write the payment: False when the event was processed already.

        Raises _Conflict when the payment changed since it was read; then nothing was written.
        """
        ...

    async def read_locked(
        self, connection: _Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Sequence[Any]]:
        """The rows (_COLUMNS) of the payments by (provider, payment id) that exist, holding
        their row locks till the transaction ends."""
        ...

    async def write_batch(
        self,
        connection: _Connection,
        events: Sequence[tuple[Any, ...]],
        payments: Sequence[tuple[Any, ...]],
    ) -> bool:
        """Record a batch's events and write its payments (each row led by whether it is new);
        False when an event was recorded already: then the payments are not written."""
        ...

    async def lock_schema(self, connection: _Connection) -> None: ...
    async def close(self) -> None: ...
    def amount_in(self, amount: Decimal | None) -> Any: ...
    def amount_out(self, value: Any) -> Decimal | None: ...
    def time_in(self, moment: datetime) -> Any: ...
    def time_out(self, value: Any) -> datetime: ...


class Ledger:
    """The payments ledger on SQLite or PostgreSQL; open with `await Ledger.open(url)`."""

    def __init__(
        self,
        driver: _Driver,
        where: str = "the ledger",
        *,
        batch_size: int = 1,
        batch_wait: float = 0.002,
    ) -> None:
        self._driver = driver
        # Where it is (no password), for the messages that an operator must act on.
        self._where = where
        # Concurrent applies share a transaction: one commit (one fsync, one BEGIN/COMMIT pair)
        # for a batch. A batch of 1 is no batching at all: each apply is on its own, as it was.
        self._group: GroupCommit[tuple[LedgerEvent, Decide], bool] | None = None
        if batch_size > 1:
            self._group = GroupCommit(self._apply_batch, size=batch_size, wait=batch_wait)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        create: bool = True,
        timeout: float = 10.0,
        batch_size: int = 1,
        batch_wait: float = 0.002,
    ) -> Ledger:
        """Connect to `url` (sqlite:///path or postgresql://...) and create or migrate the schema;
        with create=False (the commands that only read) neither, and a ledger that does not
        exist yet is an error.

        `pool_size` bounds PostgreSQL connections; SQLite uses one. `timeout` bounds connecting,
        each statement and each wait for a pooled connection on PostgreSQL (SQLite waits for its
        file's lock up to its busy timeout); a batch's transaction is bound by the same limits.
        `batch_size` > 1: concurrent applies are applied in one transaction, up to that many,
        gathered for up to `batch_wait` seconds. Raises TransientError when the database cannot
        be reached, LedgerSetupError when it cannot be used as configured.
        """
        scheme = urlsplit(url).scheme
        driver: _Driver
        try:
            if scheme == "sqlite":
                driver = await _SqliteDriver.connect(_sqlite_path(url, create=create), create)
            elif scheme in ("postgresql", "postgres"):
                driver = await _PostgresDriver.connect(url, pool_size, timeout)
            else:
                raise ValueError(f"unsupported ledger URL scheme {scheme!r}")
        except Exception as exc:
            setup = _setup_error(exc, url)
            if setup is not None:
                raise setup from exc
            if _is_transient(exc):
                raise TransientError(f"ledger unreachable: {_describe_reach(exc, url)}") from exc
            raise
        ledger = cls(driver, _where(url), batch_size=batch_size, batch_wait=batch_wait)
        try:
            await (ledger._migrate() if create else ledger._check_schema(url))
        except BaseException as exc:
            await driver.close()
            if isinstance(exc, Exception) and _is_transient(exc):
                raise TransientError(f"ledger schema update failed: {_describe(exc)}") from exc
            raise
        return ledger

    async def close(self) -> None:
        """Finish the batches under way, then close the connection(s)."""
        try:
            if self._group is not None:
                await self._group.close()
        finally:
            await self._driver.close()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def apply(self, event: LedgerEvent, decide: Decide) -> bool:
        """Apply one event in one transaction; False when it was already processed.

        `decide` gets the current payment (None if there is none) and returns its new state, or
        None to leave it as it is; the event is recorded as processed either way. `decide` must be
        pure: it runs again if the payment changed meanwhile.
        Raises TransientError on connection loss, lock timeouts and serialization failures.
        Batched, the same: an error of this event's own fails it alone; one of the batch's
        transaction (the connection lost, a timeout) fails every event of the batch.
        """
        with tracing.span("ledger.apply", kind="client"):
            if self._group is None:
                return await self._apply_retried(event, decide)
            return await self._group.submit((event, decide))

    async def _apply_retried(self, event: LedgerEvent, decide: Decide) -> bool:
        try:
            for attempt in range(_APPLY_ATTEMPTS):
                try:
                    async with self._driver.writer(locked=attempt > 0) as db:
                        return await self._apply(db, event, decide, locked=attempt > 0)
                except _Conflict:
                    continue
        except Exception as exc:
            error = self._write_error(exc)
            if error is exc:
                raise
            raise error from exc
        raise TransientError("ledger write failed: the payment kept changing under it")

    def _write_error(self, exc: Exception) -> Exception:
        """What the caller of apply() sees of a write's failure: the one mapping, batched or not."""
        if _is_transient(exc):
            kind = LedgerStorageError if _is_storage_error(exc) else TransientError
            return kind(f"ledger write failed ({self._where}): {_describe(exc)}")
        if _is_data_error(exc):
            # The same values would be refused again: no retry can help.
            return PermanentError(f"the ledger refused the values: {_describe(exc)}")
        return exc

    def _caller_error(self, exc: Exception) -> Exception:
        """_write_error's exception, caused by `exc`, for a caller that is given it as a value."""
        error = self._write_error(exc)
        if error is not exc:
            error.__cause__ = exc
        return error

    async def _apply_batch(
        self, batch: Sequence[tuple[LedgerEvent, Decide]]
    ) -> builtins.list[bool | Exception]:
        """Apply a batch in one transaction: each event's result, or the error its caller gets."""
        # Every batch takes the payments' row locks in the same order: two batches that share
        # payments wait for each other, but never deadlock.
        order = sorted(
            range(len(batch)), key=lambda i: (batch[i][0].provider, batch[i][0].payment_id)
        )
        with tracing.span(
            "ledger.batch", kind="client", attributes={"hookpipe.batch_size": len(batch)}
        ):
            for attempt in range(1, _BATCH_ATTEMPTS + 1):
                try:
                    try:
                        return await self._run_batch(batch, order, isolated=False)
                    except _Isolate:
                        # An event failed and took the transaction's writes with it: once
                        # more, each event in a savepoint of its own, so that it fails alone.
                        return await self._run_batch(batch, order, isolated=True)
                except Exception as exc:
                    if _is_deadlock(exc) and attempt < _BATCH_ATTEMPTS:
                        # Two batches that create the same payment or record the same event
                        # (a redelivery racing the first delivery) can wait on each other: the
                        # database undid this one, which runs again once the other is through.
                        continue
                    # The transaction's own failure (its connection, a timeout, the commit):
                    # every event of the batch fails as a lone apply would, and is retried.
                    return [self._caller_error(exc) for _ in batch]
            raise AssertionError("unreachable: the last attempt returns")

    async def _run_batch(
        self,
        batch: Sequence[tuple[LedgerEvent, Decide]],
        order: Sequence[int],
        *,
        isolated: bool,
    ) -> builtins.list[bool | Exception]:
        async with self._driver.transaction() as db:
            if isolated:
                results: builtins.list[bool | Exception] = [False] * len(batch)
                for index in order:
                    event, decide = batch[index]
                    results[index] = await self._apply_in_savepoint(db, event, decide)
                return results
            # All at once: one read of the batch's payments, holding their locks, then one
            # write. The first failure of an event's own (its decide, a value refused, an event
            # processed already under another payment) undoes the batch, which is then run
            # isolated.
            try:
                return await self._apply_all(db, batch, order)
            except Exception as exc:
                if _is_transient(exc):
                    raise
                raise _Isolate from exc

    async def _apply_all(
        self, db: _Connection, batch: Sequence[tuple[LedgerEvent, Decide]], order: Sequence[int]
    ) -> builtins.list[bool | Exception]:
        driver = self._driver
        keys = builtins.list(
            dict.fromkeys((batch[i][0].provider, batch[i][0].payment_id) for i in order)
        )
        read = await driver.read_locked(db, keys)
        # Each payment's row as the batch leaves it, built event by event in the batch's order.
        rows: dict[tuple[str, str], Sequence[Any] | None] = {key: read.get(key) for key in keys}
        changed: dict[tuple[str, str], tuple[Any, ...]] = {}
        recorded: builtins.list[tuple[Any, ...]] = []
        results: builtins.list[bool | Exception] = [False] * len(batch)
        now = driver.time_in(datetime.now(UTC))
        for index in order:
            event, decide = batch[index]
            key = (event.provider, event.payment_id)
            row = rows[key]
            values = self._step(event, decide, row, now)
            if values is None:
                continue  # a redelivery, or the same event twice in this batch
            recorded.append(
                (
                    event.provider,
                    event.event_id,
                    event.payment_id,
                    event.event_type,
                    values[0],
                    event.received_at_ms,
                    now,
                )
            )
            rows[key] = (*values, None if row is None else row[8])
            changed[key] = values
            results[index] = True
        if recorded:
            # The events' rows in one order for every batch, as the payments' locks are: two
            # batches that record the same events (a redelivery racing its first delivery) wait
            # for each other on the event's key, never in a circle.
            recorded.sort(key=lambda row: (row[0], row[1]))
            payments = [(key not in read, *key, *values) for key, values in changed.items()]
            if not await driver.write_batch(db, recorded, payments):
                raise _Isolate  # an event was processed already, under another payment
        return results

    async def _apply_in_savepoint(
        self, db: _Connection, event: LedgerEvent, decide: Decide
    ) -> bool | Exception:
        """Apply one event of a batch; an error of its own undoes its writes only, and is
        returned. A passing error is raised: the transaction is lost, and the batch with it."""
        for _ in range(_APPLY_ATTEMPTS):
            await db.execute("SAVEPOINT event")
            try:
                applied = await self._apply(db, event, decide, locked=True)
            except Exception as exc:
                if _is_transient(exc):
                    raise
                await db.execute("ROLLBACK TO SAVEPOINT event")
                await db.execute("RELEASE SAVEPOINT event")
                if isinstance(exc, _Conflict):
                    continue  # a payment created meanwhile by another transaction: read it
                return self._caller_error(exc)
            await db.execute("RELEASE SAVEPOINT event")
            return applied
        return TransientError("ledger write failed: the payment kept changing under it")

    async def _apply(
        self, db: _Connection, event: LedgerEvent, decide: Decide, *, locked: bool
    ) -> bool:
        driver = self._driver
        row = await db.fetchrow(
            _READ_PAYMENT + driver.for_update(locked), event.provider, event.payment_id
        )
        now = driver.time_in(datetime.now(UTC))
        values = self._step(event, decide, row, now)
        if values is None:
            return False
        args = (
            event.provider,
            event.payment_id,
            event.event_id,
            event.event_type,
            values[0],
            event.received_at_ms,
            now,
            *values[1:],
        )
        if row is None:
            return await driver.write(db, True, args)
        return await driver.write(db, False, (*args, row[8]))

    def _step(
        self, event: LedgerEvent, decide: Decide, row: Sequence[Any] | None, now: Any
    ) -> tuple[Any, ...] | None:
        """The payment's columns of _COLUMNS, but the revision, once `event` is applied to `row`
        (None: no row yet); None when the row lists the event already."""
        known_events: tuple[str, ...] = () if row is None else _json_decode_events(row[5])
        if event.event_id in known_events:
            return None  # a redelivery: the list only grows, so what it holds is settled
        current = None if row is None else self._current(event.provider, event.payment_id, row)
        state = decide(current)
        events = _json_encode([*known_events, event.event_id]).decode()
        if state is not None:
            return (
                _checked_status(state.status),
                self._driver.amount_in(state.amount),
                state.currency,
                _json_encode(dict(state.details)).decode(),
                state.version,
                events,
                now if row is None or current is None else row[6],
                now,
            )
        if row is not None:
            return (*row[:5], events, row[6], row[7])  # as it was, with one more event
        # No payment yet, and nothing to say of it: a row of events only (status NULL), so that
        # the payment lists this event once it exists.
        return (None, None, None, "{}", None, events, now, now)

    async def get(self, provider: str, payment_id: str) -> Payment | None:
        """The payment, or None when the ledger has none by that id."""
        rows = await self._read(_GET_PAYMENT, provider, payment_id)
        return self._payment(provider, payment_id, rows[0]) if rows else None

    async def list(
        self, provider: str | None = None, status: str | None = None, limit: int | None = None
    ) -> builtins.list[Payment]:
        """Payments, the most recently updated first, filtered by provider and status."""
        where = ["status IS NOT NULL"]
        args: builtins.list[Any] = []
        if provider is not None:
            args.append(provider)
            where.append(f"provider = ${len(args)}")
        if status is not None:
            args.append(status)
            where.append(f"status = ${len(args)}")
        sql = (
            f"SELECT {_COLUMNS}, provider, payment_id FROM payments"
            f" WHERE {' AND '.join(where)} ORDER BY updated_at DESC, provider, payment_id"
        )
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        rows = await self._read(sql, *args)
        return [self._payment(row[9], row[10], row) for row in rows]

    async def processed(self, provider: str, event_id: str) -> bool:
        """Whether an event was applied already."""
        return bool(await self._read(_PROCESSED, provider, event_id))

    async def applied(
        self, provider: str, event_id: str, event_type: str | None = None
    ) -> AppliedEvent | None:
        """What the ledger recorded of an event it applied; None if it never applied it.

        With `event_type`, an event recorded as "{event id}:{event type}" is found too (as
        DreamClass's are: its signature covers the id alone)."""
        typed = event_id if event_type is None else f"{event_id}:{event_type}"
        rows = await self._read(_APPLIED_EVENT, provider, event_id, typed)
        if not rows:
            return None
        recorded_id, payment_id, event_type, status, received_at_ms, applied_at = rows[0]
        return AppliedEvent(
            provider,
            recorded_id,
            payment_id,
            event_type,
            status,
            received_at_ms,
            self._driver.time_out(applied_at),
        )

    def _current(self, provider: str, payment_id: str, row: Sequence[Any]) -> Payment | None:
        """The payment a row holds; None when it only lists early events."""
        return None if row[0] is None else self._payment(provider, payment_id, row)

    def _payment(self, provider: str, payment_id: str, row: Sequence[Any]) -> Payment:
        """A Payment from a row that starts with the columns of _COLUMNS."""
        return Payment(
            status=row[0],
            amount=self._driver.amount_out(row[1]),
            currency=row[2],
            details=_json_decode_object(row[3]),
            version=row[4],
            provider=provider,
            payment_id=payment_id,
            events=_json_decode_events(row[5]),
            created_at=self._driver.time_out(row[6]),
            updated_at=self._driver.time_out(row[7]),
        )

    async def _read(self, sql: str, *args: Any) -> builtins.list[Sequence[Any]]:
        try:
            async with self._driver.connection() as db:
                return await db.fetch(sql, *args)
        except Exception as exc:
            if _is_transient(exc):
                raise TransientError(
                    f"ledger read failed ({self._where}): {_describe(exc)}"
                ) from exc
            raise

    async def _check_schema(self, url: str) -> None:
        """For a reader: the schema exists and is this version's, else LedgerSetupError."""
        try:
            async with self._driver.connection() as db:
                row = await db.fetchrow("SELECT max(version) FROM schema_version")
        except (asyncpg.UndefinedTableError, sqlite3.OperationalError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
                raise
            raise LedgerSetupError(
                f"the ledger at {_where(url)} has no tables yet: a worker creates them on its "
                "first start (is HOOKPIPE_LEDGER_URL the workers' one?)"
            ) from exc
        done = 0 if row is None or row[0] is None else int(row[0])
        if done < len(MIGRATIONS):
            raise LedgerSetupError(
                f"the ledger at {_where(url)} has an older schema ({done} of "
                f"{len(MIGRATIONS)} steps): start a worker of this version once to update it"
            )

    async def _migrate(self) -> None:
        """Create the schema, or bring it up to date; safe when several processes start at once."""
        async with self._driver.transaction() as db:
            await self._driver.lock_schema(db)
            await db.execute(_SCHEMA_VERSION)
            row = await db.fetchrow("SELECT max(version) FROM schema_version")
            done = 0 if row is None or row[0] is None else int(row[0])
            for number, ddl in enumerate(MIGRATIONS[done:], start=done + 1):
                for statement in ddl.format(**self._driver.column_types).split(";"):
                    if statement.strip():
                        await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES ($1)", number)


def _checked_status(status: str) -> str:
    if status not in STATUSES:
        # A handler bug: retrying cannot fix it, so the message goes to the dead-letter queue.
        raise PermanentError(f"a handler decided the unknown payment status {status!r}")
    return status


# SQLSTATE classes of passing trouble on PostgreSQL: 08 connection, 40 transaction rollback
# (serialization failure, deadlock), 53 insufficient resources (too many connections), 57 operator
# intervention (shutdown, statement timeout); and 55P03, lock not available.
_PG_TRANSIENT_CLASSES: Final = ("08", "40", "53", "57")
_SQLITE_TRANSIENT_WORDS: Final = ("locked", "busy", "disk i/o", "unable to open")
# SQLite errors that pass once an operator acts (space freed, permissions given back); their
# messages name the cause, not a row, so they are said in full.
_SQLITE_STORAGE_WORDS: Final = ("disk is full", "readonly", "read-only")


def _is_transient(exc: BaseException) -> bool:
    """Whether retrying later may succeed: the one place that decides it, for both databases."""
    if isinstance(exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError):
        # OSError: refused, reset or timed out. The others: a connection that closed under us
        # (asyncpg may see the server's goodbye message before the socket's end).
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate == "55P03"
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc).lower()
        return any(word in message for word in (*_SQLITE_TRANSIENT_WORDS, *_SQLITE_STORAGE_WORDS))
    return False


def _is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL undid the transaction to end a deadlock, or a serialization failure."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", None) in (
        "40P01",
        "40001",
    )


def _is_storage_error(exc: BaseException) -> bool:
    """SQLite's disk full or read-only file: an operator must act (hookpipe_worker_failures
    counts them apart)."""
    message = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in message for word in _SQLITE_STORAGE_WORDS
    )


def _is_data_error(exc: BaseException) -> bool:
    """A value the database refuses (out of range, not a number): the same every time."""
    # SQLSTATE class 22 on PostgreSQL; on SQLite, Python's int past 64 bits.
    return isinstance(exc, asyncpg.DataError | sqlite3.DataError | OverflowError)


def _describe(exc: BaseException) -> str:
    """The error's type and SQLSTATE, never its text (that may quote the values of a row), but
    for the SQLite errors whose text is only their cause (the disk full, a read-only file)."""
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        if any(word in message.lower() for word in _SQLITE_STORAGE_WORDS):
            return f"{type(exc).__name__}: {message}"
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")


def _sqlite_path(url: str, *, create: bool) -> str:
    """sqlite:///var/x.sqlite3 is relative to the working directory, sqlite:////var/x absolute.

    Nothing is created here: a directory that does not exist is a mistake in the URL more often
    than not, and a reader never makes a ledger of its own.
    """
    path = url.removeprefix("sqlite://").removeprefix("/").split("?", 1)[0]
    if not path:
        raise ValueError("the ledger URL names no file: expected sqlite:///path")
    if path == ":memory:":
        return path
    where = _sqlite_where(path)
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise LedgerSetupError(
            f"the ledger's directory {folder} does not exist ({where}): create it, or fix "
            "HOOKPIPE_LEDGER_URL"
        )
    if not create and not Path(path).exists():
        raise LedgerSetupError(
            f"no ledger at {Path(path).resolve()} ({where}): a worker creates it on its first "
            "start (is HOOKPIPE_LEDGER_URL the workers' one?)"
        )
    if create and not os.access(folder, os.W_OK):
        raise LedgerSetupError(
            f"cannot write the ledger in {folder}: the directory is not writable by this user "
            "(SQLite writes its journal beside the file)"
        )
    return str(Path(path).resolve())


def _sqlite_where(path: str) -> str:
    if Path(path).is_absolute():
        return f"sqlite:///{path}"
    return (
        f"sqlite:///{path} is relative to the working directory {Path.cwd()}; "
        "sqlite:////an/absolute/path has four slashes"
    )


def _where(url: str) -> str:
    """The ledger's place, fit for a message: no password."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return url
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def _setup_error(exc: BaseException, url: str) -> LedgerSetupError | None:
    """What an operator must fix, said in one line; None for anything else."""
    if isinstance(exc, LedgerSetupError):
        return exc
    parts = urlsplit(url)
    host = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = (parts.path or "/").lstrip("/") or (parts.username or "postgres")
    user = parts.username or "postgres"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return LedgerSetupError(
            f"PostgreSQL at {host} has no database {database!r}: create it (createdb -h "
            f"{parts.hostname or 'localhost'} -p {parts.port or 5432} -U {user} {database}), "
            "or fix HOOKPIPE_LEDGER_URL"
        )
    if isinstance(exc, _REFUSED_LOGIN):
        return LedgerSetupError(
            f"PostgreSQL at {host} refused the login of user {user!r}: check the user and "
            "password in HOOKPIPE_LEDGER_URL, and pg_hba.conf"
        )
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).lower():
        return LedgerSetupError(f"the ledger at {url} is read-only for this user")
    return None


_REFUSED_LOGIN: Final = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


def _describe_reach(exc: BaseException, url: str) -> str:
    """Why the database cannot be reached: a connection error's text names no row."""
    if isinstance(exc, OSError):
        return f"cannot reach {_where(url)} ({exc.strerror or type(exc).__name__})"
    return _describe(exc)


# ---------------------------------------------------------------------------------------------
# SQLite: one connection, serialised by an asyncio lock; a write starts with BEGIN IMMEDIATE so
# that another process writing the same file makes us wait (busy_timeout) rather than fail late.

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=256)
def _sqlite_sql(sql: str) -> tuple[str, int]:
    """PostgreSQL's $1 placeholders as SQLite's ?1, and how many arguments the statement takes.

    The SQL is written once, for both; SQLite wants exactly as many arguments as the highest
    placeholder, so a statement that uses $1 to $7 of apply()'s arguments gets those.
    """
    count = max((int(n) for n in _PLACEHOLDER.findall(sql)), default=0)
    return _PLACEHOLDER.sub(r"?\1", sql), count


class _SqliteConnection:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        text, count = _sqlite_sql(sql)
        async with self._connection.execute(text, args[:count]) as cursor:
            row: Sequence[Any] | None = await cursor.fetchone()
            return row

    async def fetch(self, sql: str, *args: Any) -> builtins.list[Sequence[Any]]:
        text, count = _sqlite_sql(sql)
        async with self._connection.execute(text, args[:count]) as cursor:
            return builtins.list(await cursor.fetchall())

    async def execute(self, sql: str, *args: Any) -> None:
        text, count = _sqlite_sql(sql)
        await self._connection.execute(text, args[:count])


class _SqliteDriver:
    column_types: Final = {"amount": "TEXT", "json": "TEXT", "time": "TEXT"}

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._raw = connection
        self._connection = _SqliteConnection(connection)
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: str, create: bool = True) -> _SqliteDriver:
        # isolation_level=None: the ledger says where each transaction begins and ends.
        if create or path == ":memory:":
            connection = await aiosqlite.connect(path, isolation_level=None)
        else:
            # A reader opens the file read-only: it can neither create nor change it.
            uri = f"file:{urllib.parse.quote(path)}?mode=ro"
            connection = await aiosqlite.connect(uri, isolation_level=None, uri=True)
        try:
            if create:
                await connection.execute("PRAGMA journal_mode=WAL")
            # A payment must survive a power cut once its message is acknowledged.
            await connection.execute("PRAGMA synchronous=FULL")
            await connection.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        async with self._lock:
            yield self._connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Connection]:
        async with self._lock:
            await self._raw.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
                await self._raw.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may have ended the transaction already.
                with suppress(sqlite3.Error):
                    await self._raw.execute("ROLLBACK")
                raise

    def writer(self, locked: bool) -> AbstractAsyncContextManager[_Connection]:
        # Always locked: the one connection is ours from the read to the write anyway.
        return self.transaction()

    def for_update(self, locked: bool) -> str:
        return ""  # BEGIN IMMEDIATE holds the database's write lock already

    async def write(self, connection: _Connection, new: bool, args: Sequence[Any]) -> bool:
        # SQLite has no INSERT inside WITH; here the steps run one by one, in the transaction.
        if not new and await connection.fetchrow(_CHECK_REVISION, *args) is None:
            raise _Conflict
        if await connection.fetchrow(_RECORD_EVENT, *args) is None:
            return False
        await connection.execute(_INSERT_PAYMENT if new else _UPDATE_PAYMENT, *args)
        return True

    async def read_locked(
        self, connection: _Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Sequence[Any]]:
        rows = {}
        for key in keys:  # no round trips to save: a statement each is as quick
            row = await connection.fetchrow(_READ_PAYMENT, *key)
            if row is not None:
                rows[key] = row
        return rows

    async def write_batch(
        self,
        connection: _Connection,
        events: Sequence[tuple[Any, ...]],
        payments: Sequence[tuple[Any, ...]],
    ) -> bool:
        # One call into SQLite's thread per statement, for all the batch's rows.
        cursor = await self._raw.executemany(_sqlite_sql(_BATCH_RECORD_EVENT)[0], events)
        if cursor.rowcount != len(events):
            return False
        new = [row[1:] for row in payments if row[0]]
        if new:
            await self._raw.executemany(_sqlite_sql(_BATCH_INSERT_PAYMENT)[0], new)
        old = [row[1:] for row in payments if not row[0]]
        if old:
            await self._raw.executemany(_sqlite_sql(_BATCH_UPDATE_PAYMENT)[0], old)
        return True

    async def lock_schema(self, connection: _Connection) -> None:
        """BEGIN IMMEDIATE holds the database's write lock already."""

    async def close(self) -> None:
        await self._raw.close()

    def amount_in(self, amount: Decimal | None) -> str | None:
        # Plain notation, with the scale the provider sent: "10000.0" stays "10000.0".
        return None if amount is None else format(amount, "f")

    def amount_out(self, value: Any) -> Decimal | None:
        return None if value is None else Decimal(value)

    def time_in(self, moment: datetime) -> str:
        return moment.isoformat(timespec="microseconds")  # fixed width: sorts as text

    def time_out(self, value: Any) -> datetime:
        return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: an asyncpg pool; asyncpg prepares each statement once per connection and reuses it.

_PG_SCHEMA_LOCK: Final = 0x686F6F6B70697065  # "hookpipe": the advisory lock held while migrating
_PG_SERVER_SETTINGS: Final = {
    "application_name": "hookpipe",
    # The server ends a statement stuck this long (SQLSTATE 57014 / 55P03, both transient), so no
    # client-side timer is set per statement.
    "statement_timeout": "30s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
}


# The keys of a batch's rows in _PG_WRITE_BATCH's documents, in the order of the rows' values.
_EVENT_KEYS: Final = tuple(_EVENT_COLUMNS.split(", "))
_PAYMENT_KEYS: Final = ("new", "provider", "payment_id", *_PAYMENT_VALUES)


async def _keep_session(connection: Any) -> None:
    """The pool's reset, instead of asyncpg's RESET ALL etc.: a round trip per use saved.

    The ledger leaves no session state behind (no SET, LISTEN or session lock); an open
    transaction is still rolled back by asyncpg before this runs.
    """


class _PostgresConnection:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self._connection.fetchrow(sql, *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> builtins.list[Sequence[Any]]:
        rows: builtins.list[Sequence[Any]] = await self._connection.fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._connection.execute(sql, *args)


class _PostgresDriver:
    column_types: Final = {"amount": "NUMERIC", "json": "JSONB", "time": "TIMESTAMPTZ"}

    def __init__(self, pool: Any, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    @classmethod
    async def connect(cls, url: str, pool_size: int, timeout: float) -> _PostgresDriver:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,  # to connect
            # Client-side, for what the server cannot end itself: a network that went silent
            # (a black hole, a dead peer) would otherwise hold the statement for good.
            command_timeout=timeout,
            server_settings=_PG_SERVER_SETTINGS,
            reset=_keep_session,
        )
        return cls(pool, timeout)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Connection]:
        # Waiting for a pooled connection is bounded too: every one may be stuck as above.
        async with self._pool.acquire(timeout=self._timeout) as connection:
            yield _PostgresConnection(connection)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Connection]:
        async with (
            self._pool.acquire(timeout=self._timeout) as connection,
            connection.transaction(),
        ):
            yield _PostgresConnection(connection)

    def writer(self, locked: bool) -> AbstractAsyncContextManager[_Connection]:
        # Unlocked, the read and the one-statement write need no transaction around them.
        return self.transaction() if locked else self.connection()

    def for_update(self, locked: bool) -> str:
        return " FOR UPDATE" if locked else ""

    async def write(self, connection: _Connection, new: bool, args: Sequence[Any]) -> bool:
        try:
            row = await connection.fetchrow(_PG_WRITE_NEW if new else _PG_WRITE_EXISTING, *args)
        except asyncpg.UniqueViolationError as exc:
            raise _Conflict from exc  # someone else created the payment since it was read
        assert row is not None  # a SELECT without FROM or WHERE returns one row
        unchanged, recorded = row
        if not unchanged:
            raise _Conflict
        return bool(recorded)

    async def read_locked(
        self, connection: _Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Sequence[Any]]:
        rows = await connection.fetch(
            _PG_READ_LOCKED, [key[0] for key in keys], [key[1] for key in keys]
        )
        return {(row[0], row[1]): row[2:] for row in rows}

    async def write_batch(
        self,
        connection: _Connection,
        events: Sequence[tuple[Any, ...]],
        payments: Sequence[tuple[Any, ...]],
    ) -> bool:
        # Amounts as exact strings, times in RFC 3339, the JSON columns as they are (Raw).
        recorded = _json_encode([dict(zip(_EVENT_KEYS, row, strict=True)) for row in events])
        written = _json_encode(
            [
                {
                    **dict(zip(_PAYMENT_KEYS, row, strict=True)),
                    "details": msgspec.Raw(row[6]),
                    "events": msgspec.Raw(row[8]),
                }
                for row in payments
            ]
        )
        row = await connection.fetchrow(_PG_WRITE_BATCH, recorded.decode(), written.decode())
        assert row is not None  # SELECT ... FROM complete: one row
        return bool(row[0])

    async def lock_schema(self, connection: _Connection) -> None:
        # Several workers starting at once would otherwise race to create the same tables.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _PG_SCHEMA_LOCK)

    async def close(self) -> None:
        await self._pool.close()

    def amount_in(self, amount: Decimal | None) -> Decimal | None:
        return amount

    def amount_out(self, value: Any) -> Decimal | None:
        return value if value is None or isinstance(value, Decimal) else Decimal(value)

    def time_in(self, moment: datetime) -> datetime:
        return moment

    def time_out(self, value: Any) -> datetime:
        moment: datetime = value
        return moment
