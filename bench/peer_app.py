"""The peer: FastAPI on uvicorn checking a Jodo webhook's signature as hookpipe's ingress does,
then handing it to Celery with `send_task` (`python -m bench.peer_app`, needs the `peers` extra).

What a team without hookpipe would write, in its usual production form: one uvicorn process on
uvloop and httptools; Celery's publish, which blocks, run in Starlette's thread pool (as FastAPI
runs a plain `def` endpoint); Celery's defaults otherwise (a pool of 10 broker connections,
persistent messages, JSON). With `--confirms` each send waits for the broker's confirm before the
200, as hookpipe's does; without, the 200 can leave before the broker has the message.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kombu import Exchange, Queue
from starlette.concurrency import run_in_threadpool

from bench import payloads, peers
from hookpipe.settings import Settings


@dataclasses.dataclass(frozen=True, slots=True)
class PeerSettings:
    """The peer's whole configuration, from its command line."""

    port: int
    amqp_url: str
    confirms: bool
    secret: str = payloads.SECRET


def celery_app(settings: PeerSettings) -> tuple[Any, Any]:
    """The Celery app and the durable quorum queue its tasks go to."""
    queue = Queue(
        peers.QUEUE,
        Exchange(peers.EXCHANGE, type="direct", durable=True),
        routing_key=peers.QUEUE,
        durable=True,
        # Celery 5.5+ publishes to quorum queues; the delivery limit is hookpipe's default.
        queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": Settings().delivery_limit},
    )
    transport: dict[str, Any] = {"client_properties": {"connection_name": "bench-peer-celery"}}
    if settings.confirms:
        transport["confirm_publish"] = True
    app = Celery("hookpipe-bench-peer", broker=settings.amqp_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=transport,
        task_queues=(queue,),
        task_default_queue=peers.QUEUE,
        task_default_exchange=peers.EXCHANGE,
        task_default_routing_key=peers.QUEUE,
    )
    return app, queue


def _declare(celery: Any, queue: Any) -> None:
    with celery.connection_for_write() as connection:
        queue(connection.default_channel).declare()


def create_app(settings: PeerSettings) -> FastAPI:
    """POST /webhooks/jodo (401 on a bad signature, 400 on a body without event_id, else 200
    once `send_task` returns) and GET /readyz."""
    celery, queue = celery_app(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # uvicorn serves only after this: ready means the broker was reached and the queue is.
        await run_in_threadpool(_declare, celery, queue)
        yield

    async def webhook(request: Request) -> Response:
        raw = await request.body()
        # Starlette decodes headers as latin-1: encoded back, they are the bytes sent.
        provided = request.headers.get(payloads.SIGNATURE_HEADER, "").lower().encode("latin-1")
        if not hmac.compare_digest(provided, payloads.sign(raw, settings.secret).encode()):
            return JSONResponse({"status": "rejected"}, status_code=401)
        try:
            text = raw.decode()
            event_id = str(json.loads(text)["event_id"])
        except (ValueError, TypeError, KeyError):
            return JSONResponse({"status": "malformed"}, status_code=400)
        # The body as received (not re-encoded), identified by the event id, as hookpipe does.
        await run_in_threadpool(celery.send_task, peers.TASK, args=(text,), task_id=event_id)
        return JSONResponse({"status": "accepted"})

    async def ready(_: Request) -> Response:
        return JSONResponse({"status": "ready"})

    app = FastAPI(lifespan=lifespan, openapi_url=None)
    app.add_api_route(payloads.PATH, webhook, methods=["POST"])
    app.add_api_route("/readyz", ready, methods=["GET"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--confirms", action="store_true", help="Celery's confirm_publish")
    args = parser.parse_args()
    settings = PeerSettings(args.port, args.amqp_url, args.confirms)
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
