"""A small TCP proxy to put between a client and RabbitMQ, and cut, to test reconnection.

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        url = proxy.url_for(amqp_url)     # the same URL, through the proxy
        await proxy.cut()                 # drop every connection, refuse new ones
        proxy.restore()                   # accept again
        proxy.freeze()                    # keep connections open but pass no bytes
        proxy.thaw()                      # pass bytes again

Or use the `amqp_proxy` fixture: `amqp_proxy = tcp_proxy.amqp_proxy` in the test module.
While cut, the proxy keeps its port (so a client reconnects to the same address later) but
closes each new connection at once, which a client sees as the broker being down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import pytest

_CHUNK = 65536


class TcpProxy:
    """Forwards connections on an ephemeral local port to (host, port)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._cut = False
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    async def start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Client connections being forwarded now."""
        return len(self._pipes) // 2

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def cut(self) -> None:
        """Drop every forwarded connection and refuse new ones until `restore`."""
        self._cut = True
        for writer in list(self._writers):
            writer.close()
        pipes = list(self._pipes)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    def restore(self) -> None:
        """Forward new connections again."""
        self._cut = False

    def freeze(self) -> None:
        """Hold every byte in both directions, as a network that silently stalls does."""
        assert self._flowing is not None
        self._flowing.clear()

    def thaw(self) -> None:
        """Pass bytes again, the held ones first."""
        assert self._flowing is not None
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        pipes = (
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        )
        self._pipes.update(pipes)
        for task in pipes:
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_CHUNK):
                assert self._flowing is not None
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            # One side ended: end the other, as a real network failure would.
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


@pytest.fixture
async def amqp_proxy() -> AsyncIterator[TcpProxy]:
    """A TcpProxy to the local RabbitMQ (the host and port of HOOKPIPE_AMQP_URL's default)."""
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        yield proxy
