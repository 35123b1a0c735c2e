"""Helpers of the ingress tests; their fixtures are in tests/ingress_fixtures.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from hookpipe import constants as c
from hookpipe.ingress.app import PUBLISHER
from hookpipe.ingress.publisher import Publisher
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from tests import signers
from tests.conftest import (
    DREAMCLASS_SECRET,
    FLEXPRICE_SECRET,
    JODO_SECRET,
    RAPYD_ACCESS_KEY,
    RAPYD_SECRET_KEY,
    fixture_bytes,
    queue_depth,
)
from tests.worker_support import wait_until

RAPYD_URL = "https://hooks.example.test/webhooks/rapyd"

# Each provider's seed example: (fixture file, its queue, the event id the ingress reads).
SEEDS: dict[str, tuple[str, str, str]] = {
    "jodo": (
        "jodo.order.payment.debited.json",
        "jodo.order.payment.debited",
        "45bb1387-2a83-4fdb-a149-e7dec81043f0",
    ),
    "dreamclass": (
        "dreamclass.PAYMENT_CREATED.json",
        "dreamclass.PAYMENT_CREATED",
        "214fb720-2248-44e0-9bfd-72171f9e72de",
    ),
    "rapyd": (
        "rapyd.INVOICE_PAYMENT_CREATED.json",
        "rapyd.INVOICE_PAYMENT_CREATED",
        "wh_83311530262abb943ac9ae3b6e34a441",
    ),
    "flexprice": (
        "flexprice.payment.created.json",
        "flexprice.payment.created",
        "msg_2a9cQ6mB1vXz7YtR4pLk8NwE3sDf",
    ),
}


def dreamclass_body(
    *,
    event_id: str = "214fb720-2248-44e0-9bfd-72171f9e72de",
    event_type: str = "PAYMENT_CREATED",
    secret: str = DREAMCLASS_SECRET,
) -> bytes:
    """The DreamClass seed with its `signature` field made with `secret` (it sits in the body)."""
    raw = fixture_bytes("dreamclass.PAYMENT_CREATED.json")
    signature = signers.dreamclass_signature(event_id, secret)
    return (
        raw.replace(b"b2fl8PdPRVsq0vre6DpdHJwHse8Ln+WlY0Vx32aKxtE=", signature.encode())
        .replace(b"214fb720-2248-44e0-9bfd-72171f9e72de", event_id.encode())
        .replace(b'"PAYMENT_CREATED"', f'"{event_type}"'.encode())
    )


def signed(
    provider: str, body: bytes | None = None, **options: Any
) -> tuple[bytes, dict[str, str]]:
    """A provider's seed (or `body`) and the headers that provider would send, signed correctly."""
    if body is None:
        body = dreamclass_body() if provider == "dreamclass" else fixture_bytes(SEEDS[provider][0])
    now = int(options.pop("now", time.time()))
    match provider:
        case "jodo":
            headers = signers.jodo(body, options.pop("secret", JODO_SECRET))
        case "dreamclass":
            headers = {}
        case "rapyd":
            headers = signers.rapyd(
                body,
                url=options.pop("url", RAPYD_URL),
                access_key=RAPYD_ACCESS_KEY,
                secret_key=options.pop("secret_key", RAPYD_SECRET_KEY),
                salt=options.pop("salt", "a1b2c3d4e5f6"),
                timestamp=now,
            )
        case "flexprice":
            headers = signers.standard_webhooks(
                body,
                secret=options.pop("secret", FLEXPRICE_SECRET),
                msg_id=options.pop("msg_id", SEEDS["flexprice"][2]),
                timestamp=now,
                prefix=options.pop("prefix", "svix"),
            )
        case _:
            raise AssertionError(provider)
    assert not options, f"unused options {options}"
    return body, headers


def fresh_jodo(
    event_id: str | None = None, order_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The Jodo seed under a new event id (or `event_id`, and `order_id` for its payment),
    signed: each its own event, so the replay guard takes none for a repeat."""
    body = fixture_bytes(SEEDS["jodo"][0]).replace(
        SEEDS["jodo"][2].encode(), (event_id or str(uuid.uuid4())).encode()
    )
    if order_id is not None:
        body = body.replace(b"order_12343532424", order_id.encode())
    return signed("jodo", body)


@dataclass
class Ingress:
    """An ingress app served on an ephemeral port, and a client for it."""

    app: web.Application
    client: TestClient[web.Request, web.Application]

    @property
    def publisher(self) -> Publisher:
        return self.app[PUBLISHER]

    async def post(
        self, provider: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> ClientResponse:
        return await self.client.post(
            f"/webhooks/{provider}",
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    async def wait_ready(self) -> None:
        """Wait until the ingress has its broker connection and channel; fail if it does not."""
        await wait_until(lambda: self.publisher.ready, what="the ingress ready")


StartIngress = Callable[..., Awaitable[Ingress]]
MakeSettings = Callable[..., Settings]


async def total_depth(channel: aio_pika.abc.AbstractChannel) -> int:
    """Messages ready in every handled queue and in hookpipe.unrouted together."""
    depths = [await queue_depth(channel, q) for q in (c.UNROUTED_QUEUE, *handled_queues())]
    return sum(depths)


async def refusal(response: ClientResponse) -> tuple[int, str]:
    """A refused request's status and the reason its JSON body gives."""
    return response.status, (await response.json())["error"]
