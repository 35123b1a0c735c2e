"""A bounded fuzz of the ingress: a few thousand hostile requests across the four providers, from
a fixed seed so that a failure can be replayed. Whatever comes in: no 5xx, nothing published
that was not validly authenticated, and the process's memory stays flat."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson

from tests import signers
from tests.conftest import DREAMCLASS_SECRET, fixture_bytes
from tests.ingress_support import SEEDS, MakeSettings, StartIngress, signed, total_depth

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel
SEED = 20261203
REQUESTS = 3000
PROVIDERS = ("jodo", "dreamclass", "rapyd", "flexprice", "unknown")
HEADER_NAMES = (
    "X-Jodo-Signature",
    "Authorization",
    "salt",
    "timestamp",
    "signature",
    "access_key",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "Content-Type",
    "Content-Encoding",
    "X-Request-ID",
)


def _text(rng: random.Random) -> str:
    alphabet = rng.choice(
        (string.printable, string.hexdigits, "é€\u202e\x00\ud7ff漢字🙂", string.ascii_letters)
    )
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def _json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**63, -(2**63) - 1, 10**30, rng.randint(-(10**6), 10**6)))
    if kind == 3:
        return rng.choice((0.1, -1e308, 1e-320, 3.14159))
    if kind in (4, 5):
        return _text(rng)
    if kind in (6, 7):
        return [_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ("id", "type", "event", "event_id", "timestamp", "data", "amount", "status", "tenant")
    return {
        rng.choice((*keys, _text(rng))): _json(rng, depth + 1) for _ in range(rng.randint(0, 6))
    }


def _dumps(value: Any) -> bytes:
    """JSON of anything _json makes (orjson refuses integers past 64 bits)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def hostile_body(rng: random.Random, provider: str) -> bytes:
    seed_name = SEEDS.get(provider, SEEDS["jodo"])[0]
    kind = rng.randint(0, 6)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 2000))
    if kind == 1:
        return _dumps(_json(rng))
    if kind == 2:
        depth = rng.choice((100, 1000, 50_000))
        return b"[" * depth + b"]" * rng.choice((depth, 0))
    seed = bytearray(fixture_bytes(seed_name))
    if kind == 3 and seed:
        for _ in range(rng.randint(1, 5)):
            seed[rng.randrange(len(seed))] = rng.randrange(256)
    elif kind == 4:
        seed = seed[: rng.randrange(len(seed) + 1)]
    elif kind == 5:
        document = orjson.loads(bytes(seed))
        document[rng.choice(list(document))] = _json(rng)
        return _dumps(document)
    return bytes(seed)


def hostile_headers(rng: random.Random) -> dict[str, str]:
    headers = {}
    for name in rng.sample(HEADER_NAMES, rng.randint(0, 6)):
        value = _text(rng)
        # What an HTTP client can send at all: no control characters in a header.
        printable = "".join(c for c in value if c == "\t" or not (ord(c) < 32 or ord(c) == 127))
        headers[name] = printable.encode("latin-1", "replace").decode("latin-1")
    return headers


def authentic_request(rng: random.Random, provider: str) -> tuple[bytes, dict[str, str]]:
    """A validly authenticated request whose body is anything: what a provider's bug, or a
    holder of its secret, could send."""
    if provider == "dreamclass":
        document = _json(rng)
        event_id = rng.choice((_text(rng), "214fb720-2248-44e0-9bfd-72171f9e72de"))
        if not isinstance(document, dict):
            document = {"data": document}
        document["id"] = event_id
        document["signature"] = signers.dreamclass_signature(event_id, DREAMCLASS_SECRET)
        return _dumps(document), {}
    return signed(provider, rng.choice((hostile_body(rng, provider), _dumps(_json(rng)))))


def resigned_elsewhere(rng: random.Random, provider: str) -> tuple[bytes, dict[str, str]]:
    """The seed's genuine signature headers on another body: never authentic."""
    known = provider if provider in SEEDS else "jodo"
    seed, headers = signed(known)
    body = hostile_body(rng, provider)
    if body == seed:
        body += b" "
    return body, {**headers, **hostile_headers(rng)}


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_hostile_requests_never_get_a_5xx_nor_publish_unauthenticated(
    start_ingress: StartIngress, make_settings: MakeSettings, broker: Channel
) -> None:
    # The replay guard off: every authenticated 200 is then exactly one publish.
    ingress = await start_ingress(make_settings(replay_memory=0, read_timeout=5.0))
    rng = random.Random(SEED)
    answers: Counter[int] = Counter()
    authenticated_200 = 0
    unauthenticated_200: list[tuple[str, bytes]] = []
    rss: list[int] = []
    makers: tuple[Callable[[random.Random, str], tuple[bytes, dict[str, str]]], ...] = (
        lambda r, p: (hostile_body(r, p), hostile_headers(r)),
        resigned_elsewhere,
        authentic_request,
    )

    for n in range(REQUESTS):
        provider = rng.choice(PROVIDERS)
        maker = rng.choice(makers)
        authentic = maker is authentic_request and provider != "unknown"
        body, headers = maker(rng, provider if authentic or provider != "unknown" else "jodo")
        response = await ingress.client.post(f"/webhooks/{provider}", data=body, headers=headers)
        await response.read()
        answers[response.status] += 1
        assert response.status < 500, (provider, response.status, body[:200], headers)
        if response.status == 200:
            if authentic:
                authenticated_200 += 1
            else:
                unauthenticated_200.append((provider, body[:200]))
        if n in (REQUESTS // 3, REQUESTS - 1):
            rss.append(_rss_kib())

    assert unauthenticated_200 == []
    assert await total_depth(broker) == authenticated_200
    # Every kind of answer was reached: the fuzz did go past the checks.
    assert {200, 400, 401, 404, 415} <= set(answers), answers
    # Flat: no more than 20 MiB grown over the last two thirds of the run.
    assert rss[1] - rss[0] < 20 * 1024, rss
