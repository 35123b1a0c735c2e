"""Helpers shared by the worker, supervisor and end-to-end tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika

from hookpipe import constants as c
from hookpipe.settings import Settings, to_env


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> None:
    """Poll `condition` until it holds; fail the test if it does not `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within} s")
        await asyncio.sleep(interval)


async def publish_event(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    body: bytes = b"{}",
    *,
    event_id: str = "evt-1",
    message_id: str | None = "",
    event_type: str | None = "",
    headers: Mapping[str, Any] | None = None,
) -> None:
    """Publish as the ingress does: to the events exchange, routed by `queue` ("{provider}.{type}").

    message_id defaults to "{provider}:{event_id}" and the type to the queue's event type;
    pass None to leave either out.
    """
    provider, _, default_type = queue.partition(".")
    exchange = await channel.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
    message = aio_pika.Message(
        body,
        message_id=f"{provider}:{event_id}" if message_id == "" else message_id,
        type=default_type if event_type == "" else event_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/json",
        headers={
            c.HEADER_RECEIVED_AT: time.time_ns() // 1_000_000,
            c.HEADER_ATTEMPT: 0,
            **(headers or {}),
        },
    )
    await exchange.publish(message, routing_key=queue, mandatory=True)


def header(message: aio_pika.abc.AbstractIncomingMessage, name: str) -> str:
    """A header's value as text (the headers' type is a union of every AMQP field type)."""
    return str((message.headers or {})[name])


def free_port() -> int:
    """A port that was free a moment ago, for a child process that must be told its port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def subprocess_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `hookpipe` child process that runs with these (test) settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPIPE_")}
    env.update(to_env(settings))
    env.update({"HOOKPIPE_LOG_FORMAT": "json", "HOOKPIPE_LOG_LEVEL": "info"})
    env.update(extra)
    return env
