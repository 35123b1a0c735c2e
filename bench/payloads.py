"""Signed Jodo `order.payment.debited` webhooks, each with its own event id and order id.

Bodies are the seed example with two values swapped in, so every figure is measured on the
message size and shape a real Jodo webhook has.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from importlib import resources
from typing import Any, Final

import aio_pika

from hookpipe import constants as c
from hookpipe.ingress.jodo import NAME as PROVIDER
from hookpipe.schemas.jodo import ORDER_PAYMENT_DEBITED as EVENT_TYPE

QUEUE: Final = f"{PROVIDER}.{EVENT_TYPE}"
PATH: Final = f"/webhooks/{PROVIDER}"
SIGNATURE_HEADER: Final = "X-Jodo-Signature"
# The bench's own signing secret: known to the processes it starts, used nowhere else.
SECRET: Final = "hookpipe-bench-jodo-secret"

_SEED_EVENT_ID: Final = b"45bb1387-2a83-4fdb-a149-e7dec81043f0"
_SEED_ORDER_ID: Final = b"order_12343532424"


def _seed() -> bytes:
    return resources.files("hookpipe").joinpath("seeds", f"{QUEUE}.json").read_bytes()


_TEMPLATE: Final = _seed()
if _SEED_EVENT_ID not in _TEMPLATE or _SEED_ORDER_ID not in _TEMPLATE:
    raise RuntimeError(f"the seed {QUEUE}.json changed: the bench cannot make distinct events")


def event_id(series: int, index: int) -> str:
    """A UUID-shaped event id, distinct per (series, index): series tells runs and phases apart."""
    # Version 4 and RFC 4122 variant bits set, so that a schema expecting a UUID accepts it.
    return str(uuid.UUID(int=(series << 96) | (0x4000 << 64) | (0x8000 << 48) | index))


def body(series: int, index: int) -> bytes:
    """The seed webhook with its own event id and order id."""
    order_id = f"order_bench{series:x}_{index}".encode()
    return _TEMPLATE.replace(_SEED_EVENT_ID, event_id(series, index).encode()).replace(
        _SEED_ORDER_ID, order_id
    )


def sign(raw: bytes, secret: str = SECRET) -> str:
    """Jodo's X-Jodo-Signature: lowercase hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def new_series() -> int:
    """A random 32-bit series, so that two bench runs never share an event id."""
    return uuid.uuid4().int >> 96


def message(raw: bytes, event: str) -> aio_pika.Message:
    """The message as the ingress publishes it: persistent, identified (message_id and type),
    stamped with the receive time, the request id and the attempt count."""
    now = time.time()
    headers: dict[str, Any] = {
        c.HEADER_RECEIVED_AT: int(now * 1000),
        c.HEADER_REQUEST_ID: uuid.uuid4().hex,
        c.HEADER_ATTEMPT: 0,
        c.HEADER_PROVIDER: PROVIDER,
        c.HEADER_EVENT_ID: event,
    }
    return aio_pika.Message(
        raw,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=f"{PROVIDER}:{event}",
        type=EVENT_TYPE,
        timestamp=now,
        headers=headers,
    )
