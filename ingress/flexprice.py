"""Flexprice signs with Standard Webhooks (Svix): `{id}.{timestamp}.{raw body}`.

Headers `svix-id`, `svix-timestamp`, `svix-signature`, or their `webhook-*` equivalents. The
signature header holds space-separated `v1,<base64 HMAC-SHA256>` entries; any one may match any
configured key (rotation), entries of other versions are ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from hookpipe import values
from hookpipe.ingress.auth import (
    ascii_bytes,
    b64decode,
    check_timestamp,
    hmac_sha256,
    matches_any,
    required,
)
from hookpipe.ingress.envelope import Envelope, check_token, decode
from hookpipe.ingress.errors import AuthenticationFailed, InvalidEnvelope
from hookpipe.providers import Provider, SignedWebhook
from hookpipe.schemas.flexprice import PAYMENT_EVENT_TYPES, envelope_decoder
from hookpipe.settings import Settings, secret_list, setting

NAME: Final = "flexprice"
_VERSION = "v1"


def svix_keys(value: str) -> tuple[bytes, ...]:
    """The HMAC keys of Standard Webhooks secrets: base64 of the part after `whsec_`."""
    keys = []
    for secret in secret_list(value):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("expected whsec_ followed by base64") from None
        if not key:
            raise ValueError("the key after whsec_ is empty")
        keys.append(key)
    return tuple(keys)


def _svix_secrets(keys: tuple[bytes, ...]) -> str:
    return ",".join("whsec_" + base64.b64encode(key).decode() for key in keys)


@dataclass(frozen=True, slots=True)
class FlexpriceSettings:
    ENV_PREFIX: ClassVar[str] = "HOOKPIPE_FLEXPRICE_"

    # The decoded HMAC keys.
    secrets: tuple[bytes, ...] = setting(
        (),
        svix_keys,
        env="HOOKPIPE_FLEXPRICE_SECRET",
        secret=True,
        text=_svix_secrets,
        help="Flexprice (Svix) endpoint secret(s), `whsec_...`, comma-separated for rotation",
    )
    tolerance: float = setting(
        300.0, values.positive_float, help="seconds a Flexprice timestamp may be off"
    )


class Flexprice:
    """Verifies Standard Webhooks signatures against every configured key."""

    name: Final = NAME

    def __init__(self, settings: Settings) -> None:
        own = settings.section(FlexpriceSettings)
        self._keys = own.secrets
        self._tolerance = own.tolerance

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Check the timestamp and the signatures on the raw bytes; the id is the header's."""
        msg_id = verify(body, headers, self._keys, now=now, tolerance=self._tolerance)
        envelope = decode(envelope_decoder, body)
        return Envelope(msg_id, envelope.event_type)


def verify(
    body: bytes,
    headers: Mapping[str, str],
    keys: tuple[bytes, ...],
    *,
    now: float,
    tolerance: float = 300.0,
) -> str:
    """Standard Webhooks verification; returns the message id, or AuthenticationFailed says
    which check failed."""
    prefix = "svix" if "svix-id" in headers else "webhook"
    msg_id = required(headers.get(f"{prefix}-id"), "id header")
    timestamp = required(headers.get(f"{prefix}-timestamp"), "timestamp")
    header = required(headers.get(f"{prefix}-signature"), "signature")
    try:
        check_token(msg_id, "id header")
    except InvalidEnvelope as exc:
        raise AuthenticationFailed("malformed id header") from exc
    check_timestamp(timestamp, now, tolerance)
    signed = b"".join((ascii_bytes(msg_id, "id header"), b".", timestamp.encode(), b".", body))
    expected = tuple(hmac_sha256(key, signed) for key in keys)
    malformed = False
    found = False
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if not comma:
            malformed = True
            continue
        if version != _VERSION:
            continue
        found = True
        try:
            provided = b64decode(encoded, "signature")
        except AuthenticationFailed:
            malformed = True
            continue
        if matches_any(provided, expected):
            return msg_id
    if malformed:
        raise AuthenticationFailed("malformed signature")
    if not found:
        raise AuthenticationFailed("no v1 signature")
    raise AuthenticationFailed("signature mismatch")


def sign(body: bytes, *, key: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
    """The headers Flexprice would send with `body`, for the decoded key `key`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac_sha256(key, signed)).decode("ascii")
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": f"{_VERSION},{digest}",
    }


def sign_example(
    settings: Settings, event: str, body: bytes, *, fresh: bool = False, now: float = 0.0
) -> SignedWebhook:
    """An example webhook as Flexprice would send it, signed with the first configured key."""
    # The id travels in a header: derived from the body, the same example keeps its id.
    token = uuid.uuid4().hex if fresh else hashlib.sha256(body).hexdigest()[:32]
    headers = sign(
        body,
        key=settings.section(FlexpriceSettings).secrets[0],
        msg_id=f"msg_{token}",
        timestamp=int(now),
    )
    return SignedWebhook(body, headers)


PROVIDER: Final = Provider(
    name=NAME,
    events=PAYMENT_EVENT_TYPES,
    required=("secrets",),
    settings_section=FlexpriceSettings,
    authenticator=Flexprice,
    handlers="hookpipe.workers.handlers.flexprice:handlers",
    sign=sign_example,
    examples="hookpipe.seeds",
)
