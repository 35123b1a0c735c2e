"""Connecting to RabbitMQ: one named, self-healing connection per process role.

A connection that cannot be made raises BrokerConnectError, whose message is one line saying
what is wrong and what to do (the login refused, the vhost missing, nothing listening), with no
password in it. A connection that is lost and comes back says so once each in the log.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractRobustConnection
from pamqp.commands import Basic
from yarl import URL

from hookpipe.errors import BrokerUnavailable, SetupError

log = structlog.get_logger()


class BrokerConnectError(BrokerUnavailable, SetupError):
    """No connection to the broker; `permanent` when retrying cannot help (a refused login or
    vhost: the settings or the broker's users must change)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def connection_name(role: str) -> str:
    """`ingress@host`, `worker@host`: how the connection shows in the broker's own tools."""
    return f"{role}@{socket.gethostname()}"


async def connect(
    amqp_url: str,
    role: str,
    *,
    timeout: float = 10.0,
    reconnect_interval: float | None = None,
    on_state: Callable[[bool], None] | None = None,
) -> AbstractRobustConnection:
    """A robust connection named after `role`; it reconnects by itself after a broker outage,
    every `reconnect_interval` seconds (HOOKPIPE_RECONNECT_INTERVAL; aio-pika's 5 s if None).
    `on_state(up)` hears each change: True once connected and again on each reconnect, False
    when the connection is lost or closed (a broker_connected gauge).

    `amqp_url` may list several nodes of one cluster, comma-separated: they are tried in a random
    order (so that processes spread over them), and after a lost connection or a failed attempt
    the next attempt goes to the next node. Raises BrokerConnectError when no node takes the
    first connection.
    """
    nodes = [with_reconnect_interval(url, reconnect_interval) for url in nodes_of(amqp_url)]
    random.shuffle(nodes)
    refused: list[BrokerConnectError] = []
    for first in range(len(nodes)):
        order = tuple(URL(url) for url in nodes[first:] + nodes[:first])
        connection_class = type("NodesConnection", (_NodesConnection,), {"NODES": order})
        try:
            connection: AbstractRobustConnection = await aio_pika.connect_robust(
                str(order[0]),
                client_properties={"connection_name": connection_name(role)},
                timeout=timeout,
                connection_class=connection_class,
            )
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            refused.append(explain(exc, nodes[first]))
            continue
        _log_losses(connection, on_state)
        return connection
    raise none_answered(refused)


# What a confirmed publish (`exchange.publish(..., timeout=...)` on a channel with confirms)
# raises when the broker did not confirm it: a nack or return, a closed channel or connection,
# no answer in time.
UNCONFIRMED: Final = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    TimeoutError,
    ConnectionError,
)


def none_answered(refused: list[BrokerConnectError]) -> BrokerConnectError:
    """The error of a connection no node took: the one node's own, or each node's in one line."""
    if len(refused) == 1:
        return refused[0]
    return BrokerConnectError(
        "no broker node took the connection: " + "; ".join(str(e) for e in refused),
        permanent=all(e.permanent for e in refused),
    )


def nodes_of(amqp_url: str) -> list[str]:
    """The URLs of a comma-separated HOOKPIPE_AMQP_URL (one or more)."""
    return [part.strip() for part in amqp_url.split(",") if part.strip()]


class _RenewedOnNackChannel(aio_pika.RobustChannel):
    """A robust channel that replaces its AMQP channel once the broker nacks a publish on it.

    Our queues have no length limit, so a nack says the broker could not enqueue, and on
    RabbitMQ 3.10 the channel may never again be able to: a channel keeps, per quorum queue, the
    leader the queue's record named when the channel first published to it, and while that
    leader's node is down (killed or stopped, before the new leader is recorded) it asks that
    node whether to register the publisher, gets no answer, nacks the message and asks the same
    node again for the next one (rabbit_fifo_client:enqueue/3). A reconnect after a node's loss
    restores the channels at once, within that window, and such a channel nacked every publish
    until RabbitMQ dropped its state some 90 s later. A new channel reads the queue's record
    afresh. aio-pika restores the channel (qos, queues, consumers) when its AMQP channel closes.
    """

    async def _on_open(self) -> None:
        await super()._on_open()
        # aiormq has no hook for a nack: the channel's confirm handler is wrapped instead.
        underlay = await self.get_underlay_channel()
        handle_confirm = getattr(underlay, "_on_confirm_frame", None)
        if handle_confirm is None:  # another aiormq: publishes still work, without the renewal
            return
        renewing: list[asyncio.Task[None]] = []

        async def on_confirm(frame: Any) -> None:
            await handle_confirm(frame)
            if isinstance(frame, Basic.Nack) and not renewing and not underlay.is_closed:
                log.warning("broker refused a publish; opening a new channel")
                renewing.append(asyncio.create_task(underlay.close()))

        underlay._on_confirm_frame = on_confirm  # type: ignore[attr-defined]


class _NodesConnection(aio_pika.RobustConnection):
    """A robust connection over several nodes: every attempt after the first (on a lost
    connection, or after a failed attempt) goes to the next node in NODES."""

    CHANNEL_CLASS = _RenewedOnNackChannel
    NODES: tuple[URL, ...] = ()

    def __init__(self, url: URL, *args: Any, **kwargs: Any) -> None:
        self._nodes = list(self.NODES) or [URL(url)]
        self._node = 0
        # aio-pika sets `transport` to None in __init__ and before every attempt.
        self._resets = 0
        super().__init__(url, *args, **kwargs)

    @property
    def url(self) -> URL:
        return self._nodes[self._node]

    @url.setter
    def url(self, value: URL) -> None:
        self._nodes[self._node] = URL(value)

    @property
    def transport(self) -> Any:
        return self.__dict__.get("_transport")

    @transport.setter
    def transport(self, value: Any) -> None:
        if value is None:
            self._resets += 1
            if self._resets > 2:  # not __init__'s, nor the first attempt's: the next node
                self._node = (self._node + 1) % len(self._nodes)
        self.__dict__["_transport"] = value


def with_reconnect_interval(url: str, seconds: float | None) -> str:
    """`url` asking aio-pika to reconnect every `seconds`; a URL's own `reconnect_interval`
    wins."""
    parsed = URL(url)
    if seconds is None or "reconnect_interval" in parsed.query:
        return url
    return str(parsed.update_query(reconnect_interval=f"{seconds:g}"))


def explain(exc: BaseException, amqp_url: str) -> BrokerConnectError:
    """A failed connection attempt as one line saying what is wrong and what to do."""
    parts = urlsplit(amqp_url)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5672}"
    user = unquote(parts.username or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    text = str(exc)
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return BrokerConnectError(
            f"the broker at {where} refused the login of user {user!r}: check the user and "
            "password in HOOKPIPE_AMQP_URL",
            permanent=True,
        )
    if "Connection.Close" in text or "NOT_ALLOWED" in text:
        # RabbitMQ closes the connection at Connection.Open when the vhost is missing or the
        # user may not use it.
        return BrokerConnectError(
            f"the broker at {where} refused vhost {vhost!r} to user {user!r}: it does not exist "
            f"or the user has no permission on it (rabbitmqctl add_vhost {vhost}; rabbitmqctl "
            f"set_permissions -p {vhost} {user} '.*' '.*' '.*'), or fix HOOKPIPE_AMQP_URL",
            permanent=True,
        )
    if isinstance(exc, TimeoutError):
        return BrokerConnectError(
            f"no answer from the broker at {where} in time: is it overloaded, or is something "
            "other than RabbitMQ listening there?",
            permanent=False,
        )
    reason = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else type(exc)
    if isinstance(reason, type):
        reason = reason.__name__
    return BrokerConnectError(
        f"cannot reach the broker at {where} ({reason}): is RabbitMQ running there? "
        "(`make services` starts the local one)",
        permanent=False,
    )


def _node(connection: Any) -> str:
    url = getattr(connection, "url", None)
    return f"{url.host}:{url.port}" if isinstance(url, URL) else "?"


def _log_losses(
    connection: AbstractRobustConnection, on_state: Callable[[bool], None] | None = None
) -> None:
    """Log "broker connection lost" when it goes, and "broker reconnected" when it is back:
    once each, however many attempts reconnecting takes. `on_state` hears the same changes."""
    up = [True]
    report = on_state or (lambda _: None)
    report(True)

    def lost(sender: Any, exc: BaseException | None = None) -> None:
        report(False)
        if up[0] and not getattr(sender, "close_called", False):
            up[0] = False
            log.warning(
                "broker connection lost",
                node=_node(sender),
                error_type=type(exc).__name__ if exc else None,
            )

    def back(sender: Any) -> None:
        report(True)
        if not up[0]:
            up[0] = True
            log.info("broker reconnected", node=_node(sender))

    connection.close_callbacks.add(lost)
    connection.reconnect_callbacks.add(back)
