"""Rapyd: headers `salt`, `timestamp`, `signature`.

signature = base64(lowercase hex HMAC-SHA256(secret key, url + salt + timestamp + access key +
secret key + raw body)), where url is the exact webhook URL configured at Rapyd.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from hookpipe import values
from hookpipe.ingress.auth import (
    ascii_bytes,
    b64decode,
    check_timestamp,
    hmac_sha256_hex,
    matches_any,
    required,
)
from hookpipe.ingress.envelope import Envelope, decode
from hookpipe.ingress.errors import AuthenticationFailed
from hookpipe.ingress.example import with_fields
from hookpipe.providers import Provider, SignedWebhook
from hookpipe.schemas.rapyd import INVOICE_PAYMENT_CREATED, envelope_decoder
from hookpipe.settings import Settings, setting

NAME: Final = "rapyd"


@dataclass(frozen=True, slots=True)
class RapydSettings:
    ENV_PREFIX: ClassVar[str] = "HOOKPIPE_RAPYD_"

    access_key: str | None = setting(None, str, secret=True, help="Rapyd access key")
    secret_key: str | None = setting(None, str, secret=True, help="Rapyd secret key")
    webhook_url: str | None = setting(
        None, values.http_url, help="the exact webhook URL configured at Rapyd (it is signed)"
    )
    tolerance: float = setting(
        300.0, values.positive_float, help="seconds a Rapyd timestamp may be off"
    )


class Rapyd:
    """Verifies Rapyd webhooks: the timestamp within the tolerance, then the signature."""

    name: Final = NAME

    def __init__(self, settings: Settings) -> None:
        own = settings.section(RapydSettings)
        # The registry builds it only once all three are set.
        assert own.webhook_url and own.access_key and own.secret_key
        self._key = own.secret_key.encode()
        self._url = own.webhook_url.encode()
        self._access_key = own.access_key.encode()
        self._keys = (own.access_key + own.secret_key).encode()
        self._tolerance = own.tolerance

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Check the timestamp and the signature on the raw bytes, then read id and type."""
        salt = required(headers.get("salt"), "salt")
        timestamp = required(headers.get("timestamp"), "timestamp")
        provided = required(headers.get("signature"), "signature")
        # Rapyd may send its access key too: it is signed anyway, but a wrong one is refused.
        access_key = headers.get("access_key")
        if access_key is not None and not matches_any(
            ascii_bytes(access_key, "access_key"), (self._access_key,)
        ):
            raise AuthenticationFailed("access key mismatch")
        check_timestamp(timestamp, now, self._tolerance)
        signed_hex = b64decode(provided, "signature")
        expected = hmac_sha256_hex(
            self._key,
            b"".join((self._url, ascii_bytes(salt, "salt"), timestamp.encode(), self._keys, body)),
        )
        if not matches_any(signed_hex, (expected,)):
            raise AuthenticationFailed("signature mismatch")
        envelope = decode(envelope_decoder, body)
        return Envelope(envelope.id, envelope.type)


def sign(
    body: bytes, *, url: str, access_key: str, secret_key: str, salt: str, timestamp: int
) -> dict[str, str]:
    """The headers Rapyd would send with `body`."""
    message = (url + salt + str(timestamp) + access_key + secret_key).encode() + body
    hex_digest = hmac_sha256_hex(secret_key.encode(), message)
    return {
        "salt": salt,
        "timestamp": str(timestamp),
        "signature": base64.b64encode(hex_digest).decode("ascii"),
    }


def sign_example(
    settings: Settings, event: str, body: bytes, *, fresh: bool = False, now: float = 0.0
) -> SignedWebhook:
    """An example webhook as Rapyd would send it to the configured webhook URL, at `now`."""
    if fresh:
        body = with_fields(body, id=f"wh_{uuid.uuid4().hex}")
    own = settings.section(RapydSettings)
    assert own.webhook_url and own.access_key and own.secret_key
    headers = sign(
        body,
        url=own.webhook_url,
        access_key=own.access_key,
        secret_key=own.secret_key,
        salt=secrets.token_hex(8),
        timestamp=int(now),
    )
    return SignedWebhook(body, headers)


PROVIDER: Final = Provider(
    name=NAME,
    events=(INVOICE_PAYMENT_CREATED,),
    required=("access_key", "secret_key", "webhook_url"),
    settings_section=RapydSettings,
    authenticator=Rapyd,
    handlers="hookpipe.workers.handlers.rapyd:handlers",
    sign=sign_example,
    examples="hookpipe.seeds",
)
