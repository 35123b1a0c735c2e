"""What the handler tests share: a ledger on each database, deliveries, stored details as text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import msgspec
import pytest

from hookpipe.providers import HandlerContext
from hookpipe.settings import Settings
from hookpipe.workers.handlers.base import Delivery
from hookpipe.workers.ledger import Ledger, Payment


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """A fresh ledger, once on SQLite and once on PostgreSQL; closed after the test."""
    opened = await Ledger.open(ledger_url)
    try:
        yield opened
    finally:
        await opened.close()


def context_for(ledger: Ledger) -> HandlerContext:
    """What a provider's handlers are built with, around this ledger and default settings."""
    return HandlerContext(Settings(), ledger, AsyncExitStack())


def delivery(queue: str, body: bytes, event_id: str, *, attempt: int = 1) -> Delivery:
    """A message of a handled queue, as the worker hands it to a handler."""
    provider, _, event_type = queue.partition(".")
    return Delivery(
        queue=queue,
        provider=provider,
        event_id=event_id,
        event_type=event_type,
        body=body,
        received_at_ms=1_700_000_000_000,
        attempt=attempt,
    )


def stored_text(payment: Payment) -> bytes:
    """Everything the ledger keeps of a payment, as JSON, to look for what must not be there."""
    return msgspec.json.encode(
        [payment.status, payment.amount, payment.currency, dict(payment.details)]
    )
