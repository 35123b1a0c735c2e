"""Helpers shared by the worker, supervisor and end-to-end tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aio_pika
import orjson

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


async def run_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run `hookpipe ARGS` as an operator does, with these settings: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookpipe.cli",
        *args,
        env=subprocess_env(settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class HookpipeProcess:
    """A `hookpipe <command>` child process, its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hookpipe.cli",
                *self.args,
                env=subprocess_env(self.settings),
                stdout=log,
                stderr=log,
            )

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            try:
                lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                lines.append({"event": raw.decode(errors="replace")})
        return lines

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == event]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def exit_code(self, within: float) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def ensure_gone(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
