"""The broker topology (exchanges, queues, the archive stream, dead-letter and delayed-retry
routes): planned as data once, declared idempotently at start.

The ingress publishes to hookpipe.accepted (fanout), which routes each webhook, in the same step,
to the archive stream and through an exchange-to-exchange binding to hookpipe.events (topic, by
"{provider}.{event type}", with the alternate exchange hookpipe.unrouted). The broker confirms a
publish once every queue it was routed to has it, the stream included: a 200 from the ingress
means the webhook is both archived and queued (or in hookpipe.unrouted).

The same plan feeds `declare` (what every process runs at start) and `definitions` (the
RabbitMQ definitions file in deploy/), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from hookpipe import constants as c
from hookpipe.providers import handled_queues
from hookpipe.settings import RetryPolicy, Settings

# Header the delayed-retry exchange routes on: which delay queue a retried message waits in.
RETRY_DELAY_HEADER = "x-hookpipe-retry-delay-ms"


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: aio_pika.ExchangeType
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BindingSpec:
    queue: str  # the destination: a queue, or an exchange when destination_type says so
    exchange: str
    routing_key: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    destination_type: str = "queue"


@dataclass(frozen=True, slots=True)
class Plan:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]
    bindings: tuple[BindingSpec, ...]


def dlq_name(queue: str) -> str:
    return queue + c.DLQ_SUFFIX


def queue_from_dlq_name(name: str) -> str:
    """`--queue` accepts a handled queue or its DLQ; both mean the same pair."""
    return name.removesuffix(c.DLQ_SUFFIX)


def retry_delays_ms(policy: RetryPolicy) -> tuple[int, ...]:
    """The distinct delays of the schedule, in ms: one delay queue each."""
    return tuple(sorted({round(d * 1000) for d in policy.delays}))


def retry_queue_name(delay_ms: int) -> str:
    return f"{c.RETRY_PREFIX}.{delay_ms}ms"


def _quorum(**extra: Any) -> dict[str, Any]:
    # At-least-once dead-lettering keeps a message until the dead-letter target confirms it;
    # RabbitMQ requires reject-publish overflow for it.
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **extra,
    }


def handled_queue_arguments(queue: str, settings: Settings) -> dict[str, Any]:
    return _quorum(
        **{
            # The backstop for a worker that dies on a message: past this many deliveries the
            # broker itself dead-letters it instead of handing it out forever.
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": c.DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": dlq_name(queue),
        }
    )


def archive_arguments(settings: Settings) -> dict[str, Any]:
    """The archive stream's arguments: its retention by age and by size (HOOKPIPE_ARCHIVE_*)."""
    return {
        "x-queue-type": "stream",
        # The broker's own notation: a number and a unit (Y, M, D, h, m, s).
        "x-max-age": f"{max(round(settings.archive_max_age), 1)}s",
        "x-max-length-bytes": settings.archive_max_bytes,
        "x-stream-max-segment-size-bytes": settings.archive_segment_bytes,
    }


def plan(settings: Settings) -> Plan:
    """Every exchange, queue and binding hookpipe needs, for these settings."""
    exchanges = (
        ExchangeSpec(c.ACCEPTED_EXCHANGE, aio_pika.ExchangeType.FANOUT),
        ExchangeSpec(c.UNROUTED_EXCHANGE, aio_pika.ExchangeType.FANOUT),
        ExchangeSpec(
            c.EVENTS_EXCHANGE,
            aio_pika.ExchangeType.TOPIC,
            {"alternate-exchange": c.UNROUTED_EXCHANGE},
        ),
        ExchangeSpec(c.DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT),
        ExchangeSpec(c.REQUEUE_EXCHANGE, aio_pika.ExchangeType.DIRECT),
        ExchangeSpec(c.RETRY_PREFIX, aio_pika.ExchangeType.HEADERS),
    )
    queues: list[QueueSpec] = [
        QueueSpec(c.ARCHIVE_STREAM, archive_arguments(settings)),
        QueueSpec(c.UNROUTED_QUEUE, {"x-queue-type": "quorum"}),
    ]
    bindings: list[BindingSpec] = [
        # Both in the routing of one publish to ACCEPTED_EXCHANGE: its confirm covers the
        # archive's append and the handled (or unrouted) queue's alike.
        BindingSpec(c.ARCHIVE_STREAM, c.ACCEPTED_EXCHANGE),
        BindingSpec(c.EVENTS_EXCHANGE, c.ACCEPTED_EXCHANGE, destination_type="exchange"),
        BindingSpec(c.UNROUTED_QUEUE, c.UNROUTED_EXCHANGE),
    ]
    for name in handled_queues():
        dlq = dlq_name(name)
        queues.append(QueueSpec(dlq, {"x-queue-type": "quorum"}))
        bindings.append(BindingSpec(dlq, c.DEAD_LETTER_EXCHANGE, dlq))
        queues.append(QueueSpec(name, handled_queue_arguments(name, settings)))
        bindings.append(BindingSpec(name, c.EVENTS_EXCHANGE, name))
        bindings.append(BindingSpec(name, c.REQUEUE_EXCHANGE, name))
    for delay_ms in retry_delays_ms(settings.retry):
        name = retry_queue_name(delay_ms)
        # The queue's TTL is the longest a jittered delay can be; each message carries its own,
        # shorter expiration, so a message waits at most 2 x jitter behind an earlier one.
        queues.append(
            QueueSpec(
                name,
                _quorum(
                    **{
                        "x-message-ttl": round(delay_ms * (1 + settings.retry.jitter)),
                        # No dead-letter routing key: the message keeps its own, the origin
                        # queue's name, and the requeue exchange routes it back there.
                        "x-dead-letter-exchange": c.REQUEUE_EXCHANGE,
                    }
                ),
            )
        )
        bindings.append(
            BindingSpec(
                name,
                c.RETRY_PREFIX,
                # "all-with-x": a plain "all" ignores headers named x-..., so it would match
                # every message and copy each retry into every delay queue.
                arguments={"x-match": "all-with-x", RETRY_DELAY_HEADER: str(delay_ms)},
            )
        )
    return Plan(exchanges, tuple(queues), tuple(bindings))


async def declare(channel: AbstractChannel, settings: Settings, *, force: bool = False) -> None:
    """Declare every exchange and queue; safe to call again with the same settings.

    With HOOKPIPE_DECLARE_TOPOLOGY=false (least-privilege users, topology loaded from the
    definitions file) it does nothing unless `force` is set.
    """
    if not (settings.declare_topology or force):
        return
    topology = plan(settings)
    exchanges = {
        spec.name: await channel.declare_exchange(
            spec.name, spec.type, durable=True, arguments=spec.arguments or None
        )
        for spec in topology.exchanges
    }
    queues = {
        spec.name: await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for spec in topology.queues
    }
    for binding in topology.bindings:
        if binding.destination_type == "exchange":
            await exchanges[binding.queue].bind(
                exchanges[binding.exchange], routing_key=binding.routing_key
            )
            continue
        await queues[binding.queue].bind(
            exchanges[binding.exchange],
            routing_key=binding.routing_key or None,
            arguments=binding.arguments or None,
        )


def definitions(settings: Settings, vhost: str) -> dict[str, Any]:
    """The topology in RabbitMQ's definitions format (exchanges, queues, bindings of `vhost`)."""
    topology = plan(settings)
    return {
        "exchanges": [
            {
                "name": spec.name,
                "vhost": vhost,
                "type": spec.type.value,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": spec.arguments,
            }
            for spec in topology.exchanges
        ],
        "queues": [
            {
                "name": spec.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": spec.arguments,
            }
            for spec in topology.queues
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": vhost,
                "destination": binding.queue,
                "destination_type": binding.destination_type,
                # What `declare` binds with: aio-pika binds a queue with its name when given no
                # routing key (fanout and headers exchanges ignore it, but it names the binding);
                # an exchange binding with the key as given.
                "routing_key": binding.routing_key
                if binding.destination_type == "exchange"
                else binding.routing_key or binding.queue,
                "arguments": binding.arguments,
            }
            for binding in topology.bindings
        ],
    }


async def declare_with(settings: Settings) -> None:
    """Open a short connection, declare the topology, close."""
    from hookpipe.broker import connect

    connection = await connect(settings.amqp_url, "topology")
    async with connection:
        channel = await connection.channel()
        await declare(channel, settings, force=True)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("declare", help="declare exchanges and queues (idempotent)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    asyncio.run(declare_with(settings))
    print(
        f"declared {c.ACCEPTED_EXCHANGE} -> {c.ARCHIVE_STREAM} and {c.EVENTS_EXCHANGE}, "
        f"{len(handled_queues())} queues with their DLQs, "
        f"{len(retry_delays_ms(settings.retry))} retry queues and {c.UNROUTED_QUEUE}"
    )
    return 0
