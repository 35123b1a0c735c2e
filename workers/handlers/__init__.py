"""The handler table: every handled queue's handler, built from the registry of providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from hookpipe import providers
from hookpipe.providers import HandlerContext
from hookpipe.settings import Settings
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import Ledger

__all__ = ["Delivery", "Handler", "open_handlers"]


@asynccontextmanager
async def open_handlers(
    settings: Settings, concurrency: int | None = None
) -> AsyncIterator[dict[str, Handler]]:
    """Open the ledger and what else the handlers use; yield {queue name: handler}; close all.

    `concurrency`: the worker's handlers at once per provider (default: the setting's); a
    ledger batch is never larger than half of them.

    Raises TransientError when the ledger cannot be reached, ProviderError when a provider's
    handlers do not match its events.
    """
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(
            settings.ledger_url,
            pool_size=settings.ledger_pool_size,
            timeout=settings.ledger_timeout,
            # Half the handlers at most: one batch gathers while the one before commits and
            # its acks go out, so the worker never sits with nothing in flight between them.
            batch_size=min(
                settings.ledger_batch_size,
                max(1, (concurrency or settings.worker_concurrency) // 2),
            ),
            batch_wait=settings.ledger_batch_wait,
        )
        stack.push_async_callback(ledger.close)
        context = HandlerContext(settings, ledger, stack)
        table: dict[str, Handler] = {}
        for provider in providers.providers().values():
            table.update(provider.build_handlers(context))
        yield table
