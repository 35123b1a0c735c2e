"""`hookpipe simulate PROVIDER EVENT [--url U] [--fresh]`: the one-minute tour.

Signs the provider's own example of the event (its description says where the examples are; the
built-in ones are in hookpipe/seeds/) with the configured secret, using the provider's signer,
POSTs it and prints the answer. Without --fresh the same event goes out every time, so the
pipeline's deduplication shows; --fresh gives it a new id.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Final

import aiohttp

from hookpipe import providers
from hookpipe.ingress.errors import SimulationError
from hookpipe.providers import SignedWebhook
from hookpipe.settings import Settings

DEFAULT_URL: Final = "http://127.0.0.1:8080/webhooks/{provider}"
# The providers answer within 10 s (DreamClass) or 5 s (Flexprice); a tour needs no more.
_TIMEOUT: Final = 10.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "provider", choices=providers.names(), help="the provider whose webhook to send"
    )
    parser.add_argument("event", help="the event type, as the provider writes it")
    parser.add_argument(
        "--url", help=f"where to POST (default {DEFAULT_URL.format(provider='PROVIDER')})"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="give the event a new id, so it is not a duplicate"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or DEFAULT_URL.format(provider=args.provider)
    try:
        webhook = build(settings, args.provider, args.event, fresh=args.fresh)
    except SimulationError as exc:
        print(f"hookpipe simulate: {exc}", file=sys.stderr)
        return 2
    try:
        status, text = asyncio.run(post(url, webhook))
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        print(f"hookpipe simulate: cannot POST to {url}: {reason}", file=sys.stderr)
        return 1
    print(f"{status} {text}")
    return 0 if status == 200 else 1


def build(
    settings: Settings, provider: str, event: str, *, fresh: bool = False, now: float | None = None
) -> SignedWebhook:
    """The example of `event`, signed as `provider` would sign it with the configured secret."""
    description = providers.get(provider)
    if description is None:
        raise SimulationError(
            f"unknown provider {provider!r}; there are: {', '.join(providers.names())}"
        )
    if not description.configured(settings):
        missing = ", ".join(description.missing(settings))
        raise SimulationError(f"provider {provider} is not configured: set {missing}")
    body = description.example(event)
    if body is None:
        known = ", ".join(description.example_events()) or "none"
        raise SimulationError(f"no example of {provider} event {event!r}; there are: {known}")
    signed = description.signer()(
        settings, event, body, fresh=fresh, now=time.time() if now is None else now
    )
    return SignedWebhook(signed.body, {**signed.headers, "Content-Type": "application/json"})


async def post(url: str, webhook: SignedWebhook) -> tuple[int, str]:
    """POST the webhook; the answer's status and text."""
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=webhook.body, headers=webhook.headers) as response,
    ):
        return response.status, await response.text()
