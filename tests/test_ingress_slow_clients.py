"""Slow and too many clients: the ingress served as `hookpipe ingress` serves it (a GuardedSite),
held by hundreds of connections that stall, still answers providers' webhooks promptly."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from hookpipe.ingress.app import PUBLISHER, create_app
from hookpipe.ingress.server import GuardedSite, listening_socket, server_options
from hookpipe.settings import Settings
from tests.ingress_support import MakeSettings, fresh_jodo, signed
from tests.worker_support import wait_until

Channel = aio_pika.abc.AbstractChannel
Serve = Callable[[Settings], Awaitable[str]]

# A p99 against one measured after: alone, not beside the suite's other tests.
pytestmark = pytest.mark.timing


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """serve(settings) -> the base URL of an ingress served through a GuardedSite."""
    runners: list[web.AppRunner] = []

    async def start(settings: Settings) -> str:
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None, **server_options(settings))
        await runner.setup()
        runners.append(runner)
        sock = listening_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        await GuardedSite(runner, sock).start()
        await wait_until(lambda: app[PUBLISHER].ready, what="the ingress ready")
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _open(url: str, first_bytes: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(first_bytes)
    await writer.drain()
    return reader, writer


async def _metric(session: aiohttp.ClientSession, url: str, line: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        for text in (await response.text()).splitlines():
            if text.startswith(line + " "):
                return float(text.split()[-1])
    return 0.0


async def test_slow_connections_are_dropped_and_webhooks_stay_prompt(
    serve: Serve, make_settings: MakeSettings, broker: Channel
) -> None:
    url = await serve(make_settings(read_timeout=2.0, max_connections=1000))
    body, headers = signed("jodo")
    # 100 stall inside their headers, 100 send headers and half a body, then stall.
    stalled_headers = [
        await _open(url, b"POST /webhooks/jodo HTTP/1.1\r\nHost: x\r\nX-Jodo-Sig")
        for _ in range(100)
    ]
    request_head = (
        f"POST /webhooks/jodo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nX-Jodo-Signature: {headers['X-Jodo-Signature']}\r\n\r\n"
    ).encode()
    stalled_bodies = [await _open(url, request_head + body[: len(body) // 2]) for _ in range(100)]

    async with aiohttp.ClientSession() as session:
        # 100 webhooks at 100 per second while the 200 stall.
        latencies = await _webhooks_at_100_per_second(session, url)

        # Past the read timeout: the half bodies get 408, the half headers are hung up on.
        for reader, _ in stalled_bodies:
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.split()[1] == b"408"
        for reader, _ in stalled_headers:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        dropped = await _metric(
            session, url, 'hookpipe_ingress_connections_dropped_total{reason="slow"}'
        )
        for _, writer in (*stalled_headers, *stalled_bodies):
            writer.close()
        # The same without the stall, for what this machine gives at this moment.
        baseline = await _webhooks_at_100_per_second(session, url)

    p99 = statistics.quantiles(latencies, n=100)[98]
    unloaded = statistics.quantiles(baseline, n=100)[98]
    # Under 100 ms (tests.attack measures 64 ms), or no worse than 3x the unloaded p99 when the
    # machine is busy with other tests.
    assert p99 < max(0.1, 3 * unloaded), f"p99 {p99 * 1000:.0f} ms, {unloaded * 1000:.0f} ms alone"
    assert dropped == 100


async def _webhooks_at_100_per_second(session: aiohttp.ClientSession, url: str) -> list[float]:
    """The latencies of 100 webhooks, each its own event (so that each is published)."""
    latencies = []
    for _ in range(100):
        body, headers = fresh_jodo()
        started = time.perf_counter()
        async with session.post(f"{url}/webhooks/jodo", data=body, headers=headers) as answer:
            assert answer.status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(max(0.0, 0.01 - latencies[-1]))
    return latencies


async def test_past_the_connection_cap_a_new_connection_gets_503(
    serve: Serve, make_settings: MakeSettings, broker: Channel
) -> None:
    url = await serve(make_settings(read_timeout=30.0, max_connections=20))
    held = [await _open(url, b"") for _ in range(20)]
    await asyncio.sleep(0.1)

    reader, writer = await _open(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"too many connections" in answer
    for _, held_writer in held:
        held_writer.close()
