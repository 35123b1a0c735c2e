"""`hookpipe simulate PROVIDER EVENT [--url U] [--fresh]`: the one-minute tour.

Signs the provider's own example of the event (shipped in hookpipe/seeds/) with the configured
secret, using the ingress's signing code, POSTs it and prints the answer. Without --fresh the
same event goes out every time, so the pipeline's deduplication shows; --fresh gives it a new id.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import aiohttp
import orjson
from hookpipe.ingress import dreamclass, flexprice, jodo, rapyd
from hookpipe.ingress.errors import SimulationError
from hookpipe.ingress.providers import MISSING_SETTING

from hookpipe.constants import PROVIDERS
from hookpipe.settings import Settings

DEFAULT_URL: Final = "http://127.0.0.1:8080/webhooks/{provider}"
# Events without an example of their own, made from a sibling's by changing the event type.
_DERIVED: Final = {
    ("dreamclass", "PAYMENT_UPDATED"): "PAYMENT_CREATED",
    ("dreamclass", "PAYMENT_DELETED"): "PAYMENT_CREATED",
}
# The providers answer within 10 s (DreamClass) or 5 s (Flexprice); a tour needs no more.
_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    """A webhook ready to POST: the exact body and the headers its provider would send."""

    body: bytes
    headers: dict[str, str]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("provider", choices=PROVIDERS, help="the provider whose webhook to send")
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


def seed(provider: str, event: str) -> bytes:
    """The shipped example of an event, verbatim; SimulationError if there is none."""
    seeds = resources.files("hookpipe") / "seeds"
    example = seeds / f"{provider}.{event}.json"
    if example.is_file():
        return example.read_bytes()
    sibling = _DERIVED.get((provider, event))
    if sibling is not None:
        return seed(provider, sibling)
    known = sorted(
        name.removeprefix(f"{provider}.").removesuffix(".json")
        for name in (entry.name for entry in seeds.iterdir())
        if name.startswith(f"{provider}.") and name.endswith(".json")
    )
    known += sorted(e for (p, e) in _DERIVED if p == provider)
    raise SimulationError(
        f"no example of {provider} event {event!r}; there are: {', '.join(known) or 'none'}"
    )


def build(
    settings: Settings, provider: str, event: str, *, fresh: bool = False, now: float | None = None
) -> SignedWebhook:
    """The example of `event`, signed as `provider` would sign it with the configured secret."""
    if not settings.provider_configured(provider):
        raise SimulationError(
            f"provider {provider} is not configured: set {MISSING_SETTING[provider]}"
        )
    body = seed(provider, event)
    timestamp = int(time.time() if now is None else now)
    match provider:
        case "jodo":
            if fresh:
                body = _with(body, event_id=str(uuid.uuid4()))
            headers = jodo.sign(body, settings.jodo_secrets[0])
        case "dreamclass":
            # The signature is a field of the body, so the body is rebuilt around a new one.
            document = orjson.loads(body)
            document["type"] = event
            if fresh:
                document["id"] = str(uuid.uuid4())
            key = dreamclass.signing_key(
                settings.dreamclass_secrets[0], settings.dreamclass_secret_encoding
            )
            document["signature"] = dreamclass.signature(document["id"], key)
            body = orjson.dumps(document)
            auth = settings.dreamclass_basic_auth
            headers = {} if auth is None else dreamclass.basic_auth_header(*auth)
        case "rapyd":
            if fresh:
                body = _with(body, id=f"wh_{uuid.uuid4().hex}")
            assert settings.rapyd_webhook_url and settings.rapyd_access_key
            assert settings.rapyd_secret_key
            headers = rapyd.sign(
                body,
                url=settings.rapyd_webhook_url,
                access_key=settings.rapyd_access_key,
                secret_key=settings.rapyd_secret_key,
                salt=secrets.token_hex(8),
                timestamp=timestamp,
            )
        case "flexprice":
            # The id travels in a header: derived from the body, the same example keeps its id.
            token = uuid.uuid4().hex if fresh else hashlib.sha256(body).hexdigest()[:32]
            headers = flexprice.sign(
                body, key=settings.flexprice_secrets[0], msg_id=f"msg_{token}", timestamp=timestamp
            )
        case _:
            raise SimulationError(f"unknown provider {provider!r}")
    return SignedWebhook(body, {**headers, "Content-Type": "application/json"})


async def post(url: str, webhook: SignedWebhook) -> tuple[int, str]:
    """POST the webhook; the answer's status and text."""
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=webhook.body, headers=webhook.headers) as response,
    ):
        return response.status, await response.text()


def _with(body: bytes, **fields: Any) -> bytes:
    document = orjson.loads(body)
    document.update(fields)
    return orjson.dumps(document)
