"""Shared fixtures: a RabbitMQ vhost and PostgreSQL databases of the test run's own.

The tests never touch the `/` vhost or the `test` database, so they pass beside a running
`make run`. Each fixture owns its teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import asyncpg
import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from hookpipe import constants as c
from hookpipe import topology
from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.ingress.flexprice import FlexpriceSettings, svix_keys
from hookpipe.ingress.jodo import JodoSettings
from hookpipe.ingress.rapyd import RapydSettings
from hookpipe.providers import handled_queues
from hookpipe.settings import RetryPolicy, Settings
from hookpipe.workers.ledger import Ledger

FIXTURES = Path(__file__).parent / "fixtures"
RUN_ID = uuid.uuid4().hex[:8]

PG_HOST = os.environ.get("HOOKPIPE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HOOKPIPE_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("HOOKPIPE_TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("HOOKPIPE_TEST_PG_DB", "test")

# Test secrets: known to the tests, never used anywhere else.
JODO_SECRET = "jodo-test-secret"
JODO_OLD_SECRET = "jodo-old-secret"
DREAMCLASS_SECRET = "dreamclass-test-secret"
RAPYD_ACCESS_KEY = "rak_test_access"
RAPYD_SECRET_KEY = "rsk_test_secret"
FLEXPRICE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a command in-process (cli.main) configures logging for the whole
    process; undone after it, so that no test depends on the ones before it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.unraisablehook, sys.excepthook
    yield
    if structlog.is_configured():
        structlog.reset_defaults()
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)
    sys.unraisablehook, sys.excepthook = hooks


# Every provider configured with the test secrets above.
PROVIDER_SECTIONS = (
    JodoSettings(secrets=(JODO_SECRET, JODO_OLD_SECRET)),
    DreamClassSettings(secrets=(DREAMCLASS_SECRET,)),
    RapydSettings(
        access_key=RAPYD_ACCESS_KEY,
        secret_key=RAPYD_SECRET_KEY,
        webhook_url="https://hooks.example.test/webhooks/rapyd",
    ),
    FlexpriceSettings(secrets=svix_keys(FLEXPRICE_SECRET)),
)


def fixture_bytes(name: str) -> bytes:
    """A fixture file's raw bytes, e.g. fixture_bytes("jodo.order.payment.debited.json")."""
    return (FIXTURES / name).read_bytes()


def rabbitmqctl(*args: str) -> None:
    """Run a rabbitmqctl command against the local broker; fails the test on an error."""
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError(
            "rabbitmqctl is not on PATH: the tests make a vhost of their own with it"
        )
    # A broker busy with other tests (a cluster booting beside it) can be slow to answer.
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=240)


@contextlib.contextmanager
def guest_vhost(name: str) -> Iterator[str]:
    """A new vhost `name` of the local broker for guest, deleted on leaving; yields its URL."""
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(name, safe='')}"
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """The URL of a RabbitMQ vhost that exists for this test run only."""
    with guest_vhost(f"hookpipe-test-{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def test_settings(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings every provider is configured in, with a short retry schedule for fast tests."""
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    return Settings(
        amqp_url=amqp_url,
        ledger_url=f"sqlite:///{ledger}",
        log_format="json",
        publish_timeout=2.0,
        delivery_limit=5,
        retry=RetryPolicy(delays=(0.2, 0.4), max_attempts=3, jitter=0.1),
        worker_concurrency=8,
        worker_metrics_port=0,
        shutdown_grace=5.0,
        # Off unless a test turns it on with a directory of its own: a spool shared by tests
        # would publish one test's webhooks into the next one's queues.
        spool_dir="",
        sections=PROVIDER_SECTIONS,
    )


@pytest.fixture
def make_settings(test_settings: Settings) -> Callable[..., Settings]:
    """Test settings with some fields changed: make_settings(ledger_url=...); a provider's with
    make_settings().with_section(JodoSettings, secrets=())."""

    def make(**changes: Any) -> Settings:
        return dataclasses.replace(test_settings, **changes)

    return make


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to the test vhost, closed after the test."""
    connection = await aio_pika.connect_robust(
        amqp_url, client_properties={"connection_name": "tests@hookpipe"}
    )
    try:
        yield connection
    finally:
        await connection.close()


ALL_QUEUES = (
    c.UNROUTED_QUEUE,
    *handled_queues(),
    *(topology.dlq_name(q) for q in handled_queues()),
)


@pytest.fixture
async def broker(
    amqp: AbstractRobustConnection, test_settings: Settings
) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """The topology declared in the test vhost, every queue empty; yields a channel."""
    retry_queues = [
        topology.retry_queue_name(d) for d in topology.retry_delays_ms(test_settings.retry)
    ]
    channel = await amqp.channel()
    try:
        # Declared by the first test that asks (or again once a test deleted a queue): a
        # declaration per test cost about a tenth of a second, for nothing.
        await _purge(channel, (*ALL_QUEUES, *retry_queues))
    except aio_pika.exceptions.ChannelNotFoundEntity:
        channel = await amqp.channel()  # the broker closed the other one
        await topology.declare(channel, test_settings)
        await _purge(channel, (*ALL_QUEUES, *retry_queues))
    try:
        yield channel
    finally:
        await channel.close()


async def _purge(channel: aio_pika.abc.AbstractChannel, names: tuple[str, ...]) -> None:
    underlay = await channel.get_underlay_channel()
    for name in names:
        await underlay.queue_purge(name)


async def get_message(
    channel: aio_pika.abc.AbstractChannel, queue_name: str, timeout: float = 5.0
) -> AbstractIncomingMessage:
    """The next message of a queue, acknowledged; fails the test if none arrives in time."""
    queue = await channel.get_queue(queue_name, ensure=False)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no message in {queue_name} within {timeout} s")
        await asyncio.sleep(0.05)


async def queue_depth(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> int:
    """How many ready messages a queue holds now, from a passive queue.declare.

    Asked on the underlying aiormq channel: aio-pika's robust `declare_queue(passive=True)`
    answers for a quorum queue with a count that does not follow the queue.
    """
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue_name, passive=True)
    return int(declared.message_count or 0)


def _pg_admin_dsn() -> str:
    return _pg_url_of(PG_ADMIN_DB)


def _pg_url_of(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _pg_execute(url: str, sql: str) -> None:
    """Run SQL (one statement, or several without parameters) on a connection of its own."""

    async def execute() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute())


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of this test run, dropped on leaving."""
    name = f"hookpipe_test_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    _pg_execute(_pg_admin_dsn(), f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url_of(name)
    finally:
        _pg_execute(_pg_admin_dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a PostgreSQL database made for this one test and dropped after it.

    For what only a new database shows: the ledger creating its schema, the connections to the
    database being the test's own. A test that needs an empty ledger takes `pg_ledger_url`.
    """
    with new_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_ledger_database() -> Iterator[tuple[str, str]]:
    """A PostgreSQL database for the whole run, its schema made by the ledger itself.

    Yields its URL and the SQL that empties every table of the ledger. A database per test cost
    a quarter of a second (CREATE and DROP DATABASE each copy or remove a whole database).
    """
    with new_pg_database() as url:

        async def ledger_tables() -> list[str]:
            async with await Ledger.open(url):
                pass
            connection = await asyncpg.connect(url)
            try:
                rows = await connection.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename <> 'schema_version'"
                )
            finally:
                await connection.close()
            return sorted(row["tablename"] for row in rows)

        tables = asyncio.run(ledger_tables())
        assert tables, "the ledger made no tables"
        # DELETE rather than TRUNCATE: the tables hold a few rows, and TRUNCATE's new files cost
        # an fsync each (20 ms a test).
        yield url, "; ".join(f'DELETE FROM "{table}"' for table in tables)


@pytest.fixture
def pg_ledger_url(pg_ledger_database: tuple[str, str]) -> str:
    """The URL of the run's PostgreSQL ledger database, every table emptied for this test."""
    url, empty = pg_ledger_database
    _pg_execute(url, empty)
    return url


def _sqlite_ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger: once on SQLite, once on PostgreSQL (its schema made already)."""
    if request.param == "sqlite":
        return _sqlite_ledger_url(tmp_path)
    url: str = request.getfixturevalue("pg_ledger_url")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database with no schema yet: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return _sqlite_ledger_url(tmp_path)
    url: str = request.getfixturevalue("pg_url")
    return url
