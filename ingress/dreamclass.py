"""DreamClass: the body's `signature` is base64 of HMAC-SHA256(key, the envelope's `id`).

The signature covers the id only, so the workers trust nothing in `data` they can fetch. An
optional HTTP Basic auth comes on top. The docs leave the key's encoding open: by default the
UTF-8 bytes of the secret, or (HOOKPIPE_DREAMCLASS_SECRET_ENCODING=base64) its base64 decoding.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

import orjson

from hookpipe import values
from hookpipe.errors import SettingsError
from hookpipe.ingress.auth import b64decode, hmac_sha256, matches_any, required
from hookpipe.ingress.envelope import Envelope, decode
from hookpipe.ingress.errors import AuthenticationFailed
from hookpipe.providers import Provider, SignedWebhook
from hookpipe.schemas.dreamclass import (
    PAYMENT_CREATED,
    PAYMENT_DELETED,
    PAYMENT_UPDATED,
    envelope_decoder,
)
from hookpipe.settings import Settings, secret_list, setting

NAME: Final = "dreamclass"
AUTHORIZATION_HEADER: Final = "Authorization"
_DIGEST_SIZE = 32


@dataclass(frozen=True, slots=True)
class DreamClassSettings:
    """The webhooks' secrets and auth (the ingress), and the REST API the workers call."""

    ENV_PREFIX: ClassVar[str] = "HOOKPIPE_DREAMCLASS_"

    secrets: tuple[str, ...] = setting(
        (),
        secret_list,
        env="HOOKPIPE_DREAMCLASS_SECRET",
        secret=True,
        help="DreamClass webhook secret(s), comma-separated for rotation",
    )
    # The docs leave open whether the key is the secret's text or base64 of raw key bytes.
    secret_encoding: str = setting(
        "utf-8",
        values.choice("utf-8", "base64"),
        help="`base64` if the secret is base64 of the raw key",
    )
    basic_auth: tuple[str, str] | None = setting(
        None,
        values.basic_auth,
        secret=True,
        text=":".join,
        shown_default="empty",
        help="optional `user:password` DreamClass sends",
    )
    api_url: str | None = setting(
        None, values.http_url, help="the DreamClass REST API the workers call"
    )
    api_key: str | None = setting(None, str, secret=True, help="the DreamClass API key")
    api_auth_header: str = setting("Authorization", str, help="the header the API key is sent in")
    api_auth_scheme: str = setting("Bearer", str, help="the word before the key in that header")
    # The DreamClass API's own paths (docs/providers.md says how they were found).
    api_invoice_path: str = setting(
        "/dreamclassapi/v1/financial/invoices/{invoice_id}",
        values.path_with("{invoice_id}"),
        help="the path of one invoice",
    )
    api_payment_methods_path: str = setting(
        "/dreamclassapi/v1/financial/paymentmethods",
        values.path_with(None),
        help="the path of the payment methods",
    )
    api_timeout: float = setting(
        5.0, values.positive_float, help="seconds one DreamClass API request may take"
    )
    api_rate: float = setting(
        20.0,
        values.non_negative_float,
        help="DreamClass API requests a second per worker process at most (0: no limit), so "
        "that a replay of many dead letters does not hammer a school's API",
    )
    api_breaker_failures: int = setting(
        5,
        values.non_negative_int,
        help="failed DreamClass API requests in a row after which the workers stop calling it "
        "for a cooldown, sending the events to the delayed retry at once (0: never)",
    )
    api_breaker_cooldown: float = setting(
        30.0,
        values.positive_float,
        help="seconds the DreamClass API is not called once the breaker opened; then one "
        "request probes it",
    )
    payment_methods_ttl: float = setting(
        300.0,
        values.non_negative_float,
        help="seconds the payment methods are cached (0: not cached)",
    )

    @property
    def api_configured(self) -> bool:
        return bool(self.api_url and self.api_key)


def signing_key(secret: str, encoding: str) -> bytes:
    """The HMAC key of a DreamClass secret; SettingsError if it should be base64 and is not."""
    if encoding != "base64":
        return secret.encode()
    try:
        return base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(
            "HOOKPIPE_DREAMCLASS_SECRET: not base64, as HOOKPIPE_DREAMCLASS_SECRET_ENCODING=base64 "
            "says it is"
        ) from exc


class DreamClass:
    """Verifies DreamClass webhooks: Basic auth if configured, then the signature of the id."""

    name: Final = NAME

    def __init__(self, settings: Settings) -> None:
        own = settings.section(DreamClassSettings)
        self._keys = tuple(signing_key(s, own.secret_encoding) for s in own.secrets)
        auth = own.basic_auth
        self._basic = None if auth is None else f"{auth[0]}:{auth[1]}".encode()

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Basic auth on the headers; the signature needs the body: decode {id, type, signature}."""
        if self._basic is not None:
            self._check_basic_auth(headers.get(AUTHORIZATION_HEADER))
        envelope = decode(envelope_decoder, body)
        provided = required(envelope.signature, "signature")
        digest = b64decode(provided, "signature")
        if len(digest) != _DIGEST_SIZE:
            raise AuthenticationFailed("malformed signature")
        message = envelope.id.encode()
        if not matches_any(digest, (hmac_sha256(key, message) for key in self._keys)):
            raise AuthenticationFailed("signature mismatch")
        return Envelope(envelope.id, envelope.type)

    def _check_basic_auth(self, header: str | None) -> None:
        assert self._basic is not None
        value = required(header, "basic auth")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            raise AuthenticationFailed("malformed basic auth")
        credentials = b64decode(token.strip(), "basic auth")
        if not matches_any(credentials, (self._basic,)):
            raise AuthenticationFailed("basic auth mismatch")


def signature(event_id: str, key: bytes) -> str:
    """The `signature` field DreamClass puts in an envelope with this id."""
    return base64.b64encode(hmac_sha256(key, event_id.encode())).decode("ascii")


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """The Authorization header DreamClass sends when Basic auth is configured."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {AUTHORIZATION_HEADER: f"Basic {token}"}


def sign_example(
    settings: Settings, event: str, body: bytes, *, fresh: bool = False, now: float = 0.0
) -> SignedWebhook:
    """An example webhook as DreamClass would send it: of type `event`, its id signed with the
    first configured secret, with Basic auth if that is configured."""
    # The signature is a field of the body, so the body is rebuilt around a new one.
    document = orjson.loads(body)
    document["type"] = event
    if fresh:
        document["id"] = str(uuid.uuid4())
    own = settings.section(DreamClassSettings)
    key = signing_key(own.secrets[0], own.secret_encoding)
    document["signature"] = signature(document["id"], key)
    auth = own.basic_auth
    headers = {} if auth is None else basic_auth_header(*auth)
    return SignedWebhook(orjson.dumps(document), headers)


PROVIDER: Final = Provider(
    name=NAME,
    events=(PAYMENT_CREATED, PAYMENT_UPDATED, PAYMENT_DELETED),
    required=("secrets",),
    settings_section=DreamClassSettings,
    authenticator=DreamClass,
    handlers="hookpipe.workers.handlers.dreamclass:handlers",
    sign=sign_example,
    examples="hookpipe.seeds",
    # DreamClass documents one example body; the others differ by their type alone.
    example_aliases={PAYMENT_UPDATED: PAYMENT_CREATED, PAYMENT_DELETED: PAYMENT_CREATED},
)
