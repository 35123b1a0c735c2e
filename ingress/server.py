"""The HTTP server around the ingress app, guarded against slow and too many clients.

aiohttp gives a connection all the time it likes to send its first request's headers, and a
handler all the time it likes to wait for a body. Here a connection whose first request has not
begun within HOOKPIPE_READ_TIMEOUT is closed, a body not received within it is a 408 (see
ingress/app.py), and past HOOKPIPE_MAX_CONNECTIONS a new connection is answered 503 at once, so a
flood of slow clients cannot hold every file descriptor while providers' webhooks wait.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hookpipe.ingress.metrics import IngressMetrics
from hookpipe.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BACKLOG: Final = 128
# Between two requests of a keep-alive connection (aiohttp's default is an hour).
KEEPALIVE_TIMEOUT: Final = 75.0
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 31\r\n\r\n"
    b'{"error":"too many connections"}'
)


def server_options(settings: Settings) -> dict[str, Any]:
    """How the aiohttp server that serves the app is made (web.AppRunner's options)."""
    return {
        # The body is read as sent: a compressed one is refused (415) by the handler, instead of
        # being inflated, or failed on, by aiohttp's parser before the handler runs.
        "auto_decompress": False,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
    }


class ConnectionGuard:
    """The listening socket's protocol factory: aiohttp's, with a deadline for each connection's
    first request and a cap on connections."""

    def __init__(self, settings: Settings, metrics: IngressMetrics) -> None:
        self.server: web.Server | None = None  # set when the site starts
        self._limit = settings.max_connections
        self._timeout = settings.read_timeout
        self._metrics = metrics
        # Connections whose first request has not begun yet; each leaves at its deadline or
        # when it begins, so this holds at most the connections of one timeout's span.
        self._waiting: set[asyncio.BaseProtocol] = set()

    def __call__(self) -> asyncio.BaseProtocol:
        assert self.server is not None
        if len(self.server.connections) >= self._limit:
            self._metrics.connection_dropped("limit")
            return _Busy()
        protocol: RequestHandler = self.server()
        self._waiting.add(protocol)
        asyncio.get_running_loop().call_later(self._timeout, self._expire, protocol)
        return protocol

    def began(self, protocol: asyncio.BaseProtocol) -> None:
        """A request began on `protocol`: its headers are in."""
        self._waiting.discard(protocol)

    def _expire(self, protocol: RequestHandler) -> None:
        if protocol in self._waiting:
            self._waiting.discard(protocol)
            self._metrics.connection_dropped("slow")
            protocol.force_close()


class _Busy(asyncio.Protocol):
    """Answers 503 and hangs up: the provider retries later."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


GUARD: Final = web.AppKey("connection_guard", ConnectionGuard)


@web.middleware
async def mark_begun(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the guard that a request began on its connection (its headers are in)."""
    guard = request.app.get(GUARD)
    if guard is not None and request.protocol is not None:
        guard.began(request.protocol)
    return await handler(request)


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The ingress's socket, bound and listening; OSError (e.g. the port is taken) before
    anything else has started, so that nothing is left to wind down. `reuse_port`: shared
    with the other processes of `hookpipe ingress --processes N` (SO_REUSEPORT), the kernel
    spreading new connections over them."""
    return socket.create_server(
        (host, port), family=_family(host), backlog=BACKLOG, reuse_port=reuse_port
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class GuardedSite(web.BaseSite):
    """A site on a listening socket whose connections go through the app's ConnectionGuard."""

    __slots__ = ("_sock",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._sock = sock

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        assert isinstance(self._runner, web.AppRunner)
        guard = self._runner.app[GUARD]
        guard.server = self._runner.server
        self._server = await asyncio.get_running_loop().create_server(guard, sock=self._sock)
