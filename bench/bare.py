"""The ceilings: the least code that does the broker's or the server's part of each job.

Run as child processes (`python -m bench.bare KIND ...`), one core each like the real ingress
and worker, on uvloop like them:

- `http`: an aiohttp handler that reads the body and answers 200 without publishing, or with
  `--publish` after checking its Jodo signature (HMAC-SHA256) and a confirmed publish: the
  least handler that does the ingress's job, and the e2e ceiling's front half;
- `publish`: a confirmed-publish loop with a fixed number of confirms outstanding;
- `consume`: consume and ack N messages, with `--pg` after inserting one row each (the e2e
  ceiling's back half).

Each writes its result as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from aiohttp import web

from bench import payloads
from hookpipe import constants as c


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed, as hookpipe's own processes do."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _connect(url: str, role: str) -> aio_pika.abc.AbstractRobustConnection:
    return await aio_pika.connect_robust(
        url, client_properties={"connection_name": f"bench-{role}"}
    )


# ---------------------------------------------------------------------------------------------
# http


async def serve_http(port: int, publish_url: str | None) -> None:
    """Answer POST /webhooks/jodo with 200; with a broker URL, only once its signature checks
    and its publish is confirmed."""
    exchange: AbstractExchange | None = None
    if publish_url is not None:
        connection = await _connect(publish_url, "http")
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.ACCEPTED_EXCHANGE, ensure=False)

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        if exchange is not None:
            given = request.headers.get(payloads.SIGNATURE_HEADER, "")
            if not hmac.compare_digest(payloads.sign(raw), given):
                return web.json_response({"error": "invalid signature"}, status=401)
            event = orjson.loads(raw)["event_id"]
            await exchange.publish(
                payloads.message(raw, event),
                routing_key=payloads.QUEUE,
                mandatory=True,
                timeout=5,
            )
        return web.json_response({"status": "accepted"})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post(payloads.PATH, webhook)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


# ---------------------------------------------------------------------------------------------
# publish


async def publish_loop(
    url: str, seconds: float, warmup: float, concurrency: int, series: int
) -> dict[str, Any]:
    """Confirmed publishes of Jodo-sized messages, `concurrency` outstanding, for `seconds`."""
    connection = await _connect(url, "publish")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.ACCEPTED_EXCHANGE, ensure=False)
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + warmup
        stop_at = measure_from + seconds
        counted = 0
        next_index = 0

        async def publisher() -> None:
            nonlocal counted, next_index
            while loop.time() < stop_at:
                index = next_index
                next_index += 1
                raw = payloads.body(series, index)
                await exchange.publish(
                    payloads.message(raw, payloads.event_id(series, index)),
                    routing_key=payloads.QUEUE,
                    mandatory=True,
                    timeout=5,
                )
                if loop.time() >= measure_from:
                    counted += 1

        await asyncio.gather(*(publisher() for _ in range(concurrency)))
        elapsed = loop.time() - measure_from
    return {
        "count": counted,
        "seconds": elapsed,
        "rate": counted / elapsed,
        "published": next_index,
    }


# ---------------------------------------------------------------------------------------------
# consume


async def consume(url: str, count: int, prefetch: int, pg_url: str | None) -> dict[str, Any]:
    """Consume and ack `count` messages of the Jodo queue; with `pg_url`, insert a row each."""
    pool: Any = None
    if pg_url is not None:
        import asyncpg

        pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=10)
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS processed_events "
            "(event_id TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
        )
    connection = await _connect(url, "consume")
    done = asyncio.Event()
    times: list[float] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        if pool is not None:
            event = (message.message_id or "").partition(":")[2]
            await pool.execute(
                "INSERT INTO processed_events VALUES ($1, $2) ON CONFLICT DO NOTHING",
                event,
                datetime.now(UTC),
            )
        await message.ack()
        times.append(time.monotonic())
        if len(times) >= count:
            done.set()

    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(payloads.QUEUE, ensure=False)
        await queue.consume(on_message)
        await done.wait()
    if pool is not None:
        await pool.close()
    elapsed = times[-1] - times[0]
    return {"count": len(times), "seconds": elapsed, "rate": (len(times) - 1) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    sub = parser.add_subparsers(dest="kind", required=True)
    http = sub.add_parser("http")
    http.add_argument("--port", type=int, required=True)
    http.add_argument("--publish", metavar="AMQP_URL")
    publish = sub.add_parser("publish")
    publish.add_argument("--url", required=True)
    publish.add_argument("--seconds", type=float, required=True)
    publish.add_argument("--warmup", type=float, default=1.0)
    publish.add_argument("--concurrency", type=int, required=True)
    publish.add_argument("--series", type=int, required=True)
    publish.add_argument("--out", type=Path, required=True)
    consumer = sub.add_parser("consume")
    consumer.add_argument("--url", required=True)
    consumer.add_argument("--count", type=int, required=True)
    consumer.add_argument("--prefetch", type=int, required=True)
    consumer.add_argument("--pg")
    consumer.add_argument("--out", type=Path)
    consumer.add_argument(
        "--stay",
        action="store_true",
        help="keep running after the result, so its memory can be read",
    )
    args = parser.parse_args()

    async def job() -> None:
        if args.kind == "http":
            await serve_http(args.port, args.publish)
            return
        if args.kind == "publish":
            result = await publish_loop(
                args.url, args.seconds, args.warmup, args.concurrency, args.series
            )
        else:
            result = await consume(args.url, args.count, args.prefetch, args.pg)
        if args.out is not None:
            args.out.write_bytes(orjson.dumps(result))
        if getattr(args, "stay", False):
            await asyncio.Event().wait()  # until SIGTERM ends the process

    run_loop(job())


if __name__ == "__main__":
    main()
