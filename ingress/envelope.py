"""What the ingress reads from a body: the event id and type, with each provider's `Envelope`
struct from its schemas module.

Only the envelope's fields are decoded (msgspec skips the rest without building it), so a large
payload costs a scan, not an object tree.
"""

from __future__ import annotations

import re
from typing import NamedTuple, TypeVar

import msgspec

from hookpipe.ingress.errors import InvalidEnvelope
from hookpipe.schemas.common import TOKEN_PATTERN

_TOKEN = re.compile(TOKEN_PATTERN)

T = TypeVar("T")


class Envelope(NamedTuple):
    """What routing and deduplication need from an authenticated webhook."""

    event_id: str
    event_type: str


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a body's envelope; InvalidEnvelope (400) says what is wrong with it."""
    if not body.strip():
        raise InvalidEnvelope("empty body")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        # msgspec names the field: "Object missing required field `event_id`".
        raise InvalidEnvelope(f"invalid envelope: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidEnvelope("body is not JSON") from exc
    except RecursionError as exc:
        # msgspec recurses once per nesting level; a hostile body can nest deeper than Python's
        # stack allows. No webhook nests more than a few levels.
        raise InvalidEnvelope("body is nested too deeply") from exc


def check_token(value: str | None, what: str) -> str:
    """An id or type read from elsewhere than the body (e.g. a header), held to the same rule."""
    if value is None or value == "":
        raise InvalidEnvelope(f"missing {what}")
    if _TOKEN.match(value) is None:
        raise InvalidEnvelope(f"invalid {what}: expected 1 to 128 printable ASCII characters")
    return value
