"""Connecting to RabbitMQ: one named, self-healing connection per process role."""

from __future__ import annotations

import socket

import aio_pika
from aio_pika.abc import AbstractRobustConnection


def connection_name(role: str) -> str:
    """`ingress@host`, `worker@host`: how the connection shows in the broker's own tools."""
    return f"{role}@{socket.gethostname()}"


async def connect(amqp_url: str, role: str, *, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust connection named after `role`; it reconnects by itself after a broker outage."""
    return await aio_pika.connect_robust(
        amqp_url,
        client_properties={"connection_name": connection_name(role)},
        timeout=timeout,
    )
