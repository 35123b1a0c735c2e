"""A small HTTP/1.1 load generator for signed Jodo webhooks, run as its own process.

`python -m bench.loadgen open ...` sends at a fixed rate whatever the server does (open loop)
and measures each request from its *scheduled* send time, so a stalled server shows up in the
latencies instead of slowing the generator down (no coordinated omission). `closed` keeps a
fixed number of requests outstanding, as fast as the server answers: the fallback when wrk
is missing, and the driver of the long memory run.

Requests are written by hand on keep-alive connections (asyncio protocols, uvloop): a
generator much cheaper per request than an HTTP client library, since it shares the machine's
two cores with what it measures. Every request carries its own event.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, cast

import orjson

from bench import payloads
from bench.bare import run_loop
from bench.stats import latency_summary

# A request not answered within this long counts as an error (status 0).
REQUEST_TIMEOUT = 10.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bool]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection"))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _expire(self) -> None:
        self._fail(TimeoutError())
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._complete()

    def _complete(self) -> None:
        if self._waiter is None:
            return
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end])
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            last = self._buffer.find(b"0\r\n\r\n", head_end + 4)
            if last < 0:
                return
            end = last + 5
        else:
            end = head_end + 4 + length
            if len(self._buffer) < end:
                return
        del self._buffer[:end]
        if self._timer is not None:
            self._timer.cancel()
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result((status, close))

    async def request(self, data: bytes) -> tuple[int, bool]:
        """Send one request; its status and whether the server will close the connection."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        # A timer rather than asyncio.wait_for, which costs a task per request.
        self._timer = loop.call_later(REQUEST_TIMEOUT, self._expire)
        self.transport.write(data)
        return await self._waiter


class _Pool:
    """Up to `size` connections to one server; a request waits for a free one."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self._idle: deque[_Connection] = deque()
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._open = 0

    async def _new(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, self.host, self.port)
        return protocol

    async def warm(self, count: int) -> None:
        for _ in range(min(count, self.size)):
            self._idle.append(await self._new())
            self._open += 1

    async def _acquire(self) -> _Connection | None:
        """An idle connection, or None when a new one may be opened."""
        if self._idle:
            return self._idle.popleft()
        if self._open < self.size:
            self._open += 1
            return None
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return await waiter

    def _release(self, connection: _Connection | None) -> None:
        """Hand a connection (None: a slot for a new one) to the next waiter, or keep it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is None:
            self._open -= 1
        else:
            self._idle.append(connection)

    async def request(self, data: bytes) -> int:
        """One request on a pooled connection; the status (0 on a failure or a timeout)."""
        connection = await self._acquire()
        try:
            if connection is None or connection.closed:
                connection = await self._new()
            status, close = await connection.request(data)
        except (OSError, TimeoutError):
            if connection is not None and connection.transport is not None:
                connection.transport.close()
            self._release(None)
            return 0
        if close or connection.closed:
            if connection.transport is not None:
                connection.transport.close()
            self._release(None)
        else:
            self._release(connection)
        return status

    def close(self) -> None:
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()


class _Requests:
    """The bytes of request number i: its own event id and order id, signed."""

    def __init__(self, port: int, series: int, first: int) -> None:
        self.series, self.first = series, first
        self._head = (
            f"POST {payloads.PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\n{payloads.SIGNATURE_HEADER}: "
        ).encode()

    def __call__(self, index: int) -> bytes:
        raw = payloads.body(self.series, self.first + index)
        return b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (
            self._head,
            payloads.sign(raw).encode(),
            len(raw),
            raw,
        )


async def open_loop(args: argparse.Namespace) -> dict[str, Any]:
    """Requests at a fixed rate; latencies from each request's scheduled time."""
    loop = asyncio.get_running_loop()
    pool = _Pool("127.0.0.1", args.port, args.connections)
    await pool.warm(args.connections)
    make = _Requests(args.port, args.series, args.first)
    total = round(args.rate * (args.warmup + args.seconds))
    skip = round(args.rate * args.warmup)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    # (index, scheduled time in ms since the epoch) of each measured request, for e2e latency.
    schedule: list[tuple[int, float]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def send(index: int, due: float) -> None:
        status = await pool.request(make(index))
        statuses[status] += 1
        if index >= skip:
            latencies.append((clock() - due) * 1000)

    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    clock = time.perf_counter
    start = clock() + 0.05
    wall_offset = time.time() - clock()
    for index in range(total):
        due = start + index / args.rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(send(index, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if index >= skip and args.record:
            schedule.append((args.first + index, (due + wall_offset) * 1000))
    sent_by = clock()
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 5)
    pool.close()
    return {
        "mode": "open",
        "rate_asked": args.rate,
        "sent": total,
        "measured": len(latencies),
        # How late the last request left: large when the generator itself could not keep up.
        "send_lag_ms": round((sent_by - (start + (total - 1) / args.rate)) * 1000, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": latency_summary(latencies),
        "schedule": schedule,
    }


async def closed_loop(args: argparse.Namespace) -> dict[str, Any]:
    """`connections` requests outstanding at all times, for `seconds` or `count` requests."""
    loop = asyncio.get_running_loop()
    pool = _Pool("127.0.0.1", args.port, args.connections)
    await pool.warm(args.connections)
    make = _Requests(args.port, args.series, args.first)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    next_index = 0
    counted = 0
    start = loop.time()
    measure_from = start + args.warmup
    stop_at = measure_from + args.seconds if args.seconds else float("inf")
    clock = time.perf_counter  # as in open_loop: uvloop's own clock ticks in milliseconds

    async def client() -> None:
        nonlocal next_index, counted
        while loop.time() < stop_at and (args.count is None or next_index < args.count):
            index = next_index
            next_index += 1
            data = make(index)
            sent = clock()
            statuses[await pool.request(data)] += 1
            if loop.time() >= measure_from:
                counted += 1
                latencies.append((clock() - sent) * 1000)

    await asyncio.gather(*(client() for _ in range(args.connections)))
    elapsed = loop.time() - measure_from
    pool.close()
    return {
        "mode": "closed",
        "sent": next_index,
        "measured": counted,
        "seconds": round(elapsed, 3),
        "rate": counted / elapsed if elapsed > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": latency_summary(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=("open", "closed"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--series", type=int, required=True, help="event id series")
    parser.add_argument("--first", type=int, default=0, help="index of the first event")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--count", type=int, help="closed loop: stop after this many")
    parser.add_argument("--record", action="store_true", help="write each request's schedule")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.mode == "open" and not (args.rate and args.seconds):
        parser.error("open needs --rate and --seconds")
    if args.mode == "closed" and not (args.seconds or args.count):
        parser.error("closed needs --seconds or --count")

    async def job() -> None:
        result = await (open_loop(args) if args.mode == "open" else closed_loop(args))
        args.out.write_bytes(orjson.dumps(result))

    run_loop(job())


if __name__ == "__main__":
    main()
