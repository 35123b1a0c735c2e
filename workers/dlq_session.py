"""A session on one DLQ: take its messages, hold those that stay, give them back in order.

hookpipe.unrouted is worked on the same way: like the DLQs, a quorum queue with no delivery limit.

AMQP has no way to browse a queue, so every dead-letter operation takes the messages it reads
(basic.get, unacknowledged) and gives back those it does not remove. Giving back without losing
or reordering anything depends on how the broker requeues, and RabbitMQ has done it two ways:

- A quorum queue with a delivery limit, and every quorum queue from RabbitMQ 4.0 on, puts a
  requeued message back at the head, in the order the requeues arrive.
- Before 4.0, a quorum queue without a delivery limit (our DLQs) puts it at the back.

So an operation takes every message the DLQ held when it started, in order, holds what it keeps
until the end and then gives it all back in that order: the head case restores the order as it
was, the back case too (the queue holds nothing else by then). A message dead-lettered while an
operation runs may end up ahead of the kept ones on a pre-4.0 broker; nothing is ever lost.

Two details keep the order exact. Giving back goes in chunks of RETURN_CHUNK (one basic.nack
each, `multiple`), and waits for a chunk to be back before sending the next: the broker
reorders a larger batch, and more requeues in flight than its command soft limit. And
basic.nack, not basic.reject: from RabbitMQ 4.3 on only reject counts as a failed delivery
toward a delivery limit, and before it both did; a DLQ has no limit of its own before 4.0, but
4.0-4.2 give every quorum queue a default limit of 20.

Only one operation at a time works on a DLQ: each holds an exclusive queue named after it,
which the broker deletes when the connection ends, however it ends.

An operation cut short (Ctrl-C, a publish not confirmed) gives back at once what it holds; on a
pre-4.0 broker those messages go behind the ones it had not reached yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from hookpipe.broker import connection_name, explain, nodes_of, none_answered
from hookpipe.settings import Settings
from hookpipe.workers.dlq_letter import letters_queue
from hookpipe.workers.errors import DlqBusy, DlqError

# Requeues sent as one basic.nack: the broker returns up to 32 in order (more come back
# shuffled), and keeps order across commands only while fewer than 32 are in flight.
RETURN_CHUNK: Final = 32
# How long to wait for a chunk of requeues to show in the queue before sending the next anyway.
RETURN_WAIT_S: Final = 5.0
# An exclusive queue of this prefix + the DLQ's name is the lock of one operation on that DLQ.
LOCK_PREFIX: Final = "hookpipe.dlq-lock."
# How long to wait for another operation on the same DLQ to finish.
LOCK_WAIT_S: Final = 5.0


async def connect(settings: Settings, role: str = "dlq") -> AbstractConnection:
    """A plain connection for one operation, named after `role`; BrokerUnavailable if RabbitMQ
    cannot be reached."""
    # Not the robust connection of the long-running processes: after a silent reconnect the
    # delivery tags of the messages held would mean nothing. A broken connection ends the
    # operation, and the broker gives back what it held.
    nodes = nodes_of(settings.amqp_url)
    refused = []
    for url in random.sample(nodes, k=len(nodes)):
        try:
            return await aio_pika.connect(
                url, client_properties={"connection_name": connection_name(role)}, timeout=10
            )
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            refused.append(explain(exc, url))
    raise none_answered(refused)


async def ready_count(channel: AbstractChannel, queue_name: str) -> int:
    """The messages ready in a queue, not counting those held unacknowledged."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue_name, passive=True)
    return int(declared.message_count or 0)


class DlqSession:
    """One operation on one DLQ: its lock, a channel, and the messages it holds until the end."""

    def __init__(self, connection: AbstractConnection, queue: str, settings: Settings) -> None:
        self.connection = connection
        self.queue = queue
        self.dlq = letters_queue(queue)
        self.settings = settings
        self._lock_channel: AbstractChannel | None = None
        self._channel: AbstractChannel | None = None
        self._held: list[int] = []
        self._taken = 0
        self.total = 0  # messages ready when the session began: the most it takes

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None
        return self._channel

    @property
    def holding(self) -> int:
        return len(self._held)

    async def __aenter__(self) -> DlqSession:
        await self._lock()
        try:
            # A channel of its own for the check: a missing queue closes the channel it is asked on.
            probe = await self.connection.channel()
            try:
                await probe.declare_queue(self.dlq, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise DlqError(
                    f"{self.dlq} does not exist in this vhost: run 'hookpipe topology declare'"
                ) from None
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await probe.close()
            self._channel = await self.connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self.total = await ready_count(self.channel, self.dlq)
        except BaseException:
            await self._unlock()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            await self.give_back()
        finally:
            await self._unlock()

    async def _lock(self) -> None:
        name = LOCK_PREFIX + self.dlq
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            channel = await self.connection.channel()
            try:
                await channel.declare_queue(name, exclusive=True, auto_delete=True)
            except aiormq.exceptions.ChannelLockedResource:
                if time.monotonic() >= deadline:
                    raise DlqBusy(
                        f"another 'hookpipe dlq' command is working on {self.dlq}; "
                        "try again when it is done"
                    ) from None
                await asyncio.sleep(0.1)
                continue
            self._lock_channel = channel
            return

    async def _unlock(self) -> None:
        channel, self._lock_channel = self._lock_channel, None
        if channel is None or channel.is_closed:
            return
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await channel.queue_delete(LOCK_PREFIX + self.dlq)
            await channel.close()

    async def take(self) -> AbstractIncomingMessage | None:
        """The next message, unacknowledged; None once `total` are taken or the DLQ is empty."""
        if self._taken >= self.total:
            return None
        queue = await self.channel.get_queue(self.dlq, ensure=False)
        message = await queue.get(no_ack=False, fail=False, timeout=self.settings.publish_timeout)
        if message is None:
            self._taken = self.total
            return None
        self._taken += 1
        return message

    def keep(self, message: AbstractIncomingMessage) -> None:
        """Leave the message in the DLQ: it goes back, in order, when the session ends."""
        assert message.delivery_tag is not None
        self._held.append(message.delivery_tag)

    async def remove(self, message: AbstractIncomingMessage) -> None:
        await message.ack()

    async def give_back(self) -> None:
        """Requeue every message kept, in the order taken (see the module's docstring)."""
        # Delivery tags grow in the order messages were taken on the channel.
        held, self._held = sorted(self._held), []
        if not held or self._channel is None or self._channel.is_closed:
            return  # a closed channel's messages went back when it closed
        underlay = await self.channel.get_underlay_channel()
        for start in range(0, len(held), RETURN_CHUNK):
            chunk = held[start : start + RETURN_CHUNK]
            before = await ready_count(self.channel, self.dlq)
            # Everything unacknowledged up to the chunk's last tag is exactly the chunk: the
            # messages before it were acknowledged or given back already.
            await underlay.basic_nack(chunk[-1], multiple=True, requeue=True)
            deadline = time.monotonic() + RETURN_WAIT_S
            while await ready_count(self.channel, self.dlq) < before + len(chunk):
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def open_session(settings: Settings, queue: str) -> AsyncIterator[DlqSession]:
    """A session on `queue`'s DLQ, on a connection of its own that closes with it."""
    connection = await connect(settings)
    try:
        async with DlqSession(connection, queue, settings) as session:
            yield session
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError, ConnectionError):
            await connection.close()
