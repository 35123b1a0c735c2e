"""The handler registry: every handled queue's handler, with the resources they share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from hookpipe.workers.dreamclass_api import DreamClassApi
from hookpipe.workers.handlers import dreamclass, flexprice, jodo, rapyd
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import Ledger

from hookpipe.settings import Settings

__all__ = ["Delivery", "Handler", "open_handlers"]


@asynccontextmanager
async def open_handlers(settings: Settings) -> AsyncIterator[dict[str, Handler]]:
    """Open the ledger and what else the handlers use; yield {queue name: handler}; close all.

    Raises TransientError when the ledger cannot be reached.
    """
    async with AsyncExitStack() as stack:
        ledger = await Ledger.open(settings.ledger_url, pool_size=settings.ledger_pool_size)
        stack.push_async_callback(ledger.close)
        registry: dict[str, Handler] = {}
        # One line per provider; a resource it needs is opened on `stack`, closed in reverse.
        registry.update(jodo.handlers(ledger))
        # Without the DreamClass API its handlers dead-letter, saying which settings are missing.
        dreamclass_api = DreamClassApi(settings) if settings.dreamclass_api_configured else None
        if dreamclass_api is not None:
            stack.push_async_callback(dreamclass_api.close)
        registry.update(dreamclass.handlers(ledger, dreamclass_api))
        registry.update(rapyd.handlers(ledger))
        registry.update(flexprice.handlers(ledger))
        yield registry
