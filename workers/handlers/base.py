"""What a handler is given, and what it is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a handler sees it: the webhook's raw bytes and what the broker said of it."""

    queue: str  # the handled queue it came from, e.g. "jodo.order.payment.debited"
    provider: str
    event_id: str  # the provider's event id (message_id without the "provider:" prefix)
    event_type: str
    body: bytes  # the webhook's raw bytes, exactly as the provider sent them
    received_at_ms: int | None  # when the ingress read it, ms since the epoch
    attempt: int  # 1 on the first delivery to a handler, 2 on the first retry, ...


# A handler applies one delivery to the ledger, or raises TransientError / PermanentError (or
# msgspec.DecodeError/ValidationError, which count as permanent). It must be idempotent: the same
# event applied twice, or replayed, changes nothing the second time.
Handler = Callable[[Delivery], Awaitable[None]]
