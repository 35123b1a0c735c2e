"""A RabbitMQ vhost and PostgreSQL databases of the bench's own, made at start and removed after.

The bench never touches the `/` vhost or another database, so it can run beside `make run` or
the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

# The broker and the PostgreSQL server to measure on; a vhost and databases are made there.
AMQP_BASE_URL = os.environ.get("HOOKPIPE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_URL = os.environ.get(
    "HOOKPIPE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is not on PATH: the bench makes a vhost of its own with it")
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def consumers(vhost_name: str, queue: str) -> int:
    """Consumers of a queue, as the broker lists them.

    Not from aio-pika's passive `declare_queue`: its robust channel answers for a quorum queue
    with counts that do not follow the queue.
    """
    lines = _rabbitmqctl("list_consumers", "-p", vhost_name, "queue_name").splitlines()
    return sum(1 for line in lines if line.strip() == queue)


@asynccontextmanager
async def vhost(name: str) -> AsyncIterator[str]:
    """A vhost for this run, deleted (with every queue in it) on the way out; yields its URL."""
    user = urlsplit(AMQP_BASE_URL).username or "guest"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        parts = urlsplit(AMQP_BASE_URL)
        yield urlunsplit(parts._replace(path="/" + quote(name, safe="")))
    finally:
        _rabbitmqctl("delete_vhost", name)


class Databases:
    """PostgreSQL databases made on demand for the run, all dropped by `drop_all()`."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._made: list[str] = []

    async def create(self, label: str) -> str:
        """A new, empty database; its URL."""
        name = f"{self._prefix}_{label}"
        await self._admin(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        parts = urlsplit(PG_ADMIN_URL)
        return urlunsplit(parts._replace(path="/" + name))

    async def drop_all(self) -> None:
        while self._made:
            name = self._made.pop()
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, sql: str) -> None:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()
