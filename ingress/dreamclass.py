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
from typing import Final

import orjson

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
from hookpipe.settings import Settings

NAME: Final = "dreamclass"
AUTHORIZATION_HEADER: Final = "Authorization"
_DIGEST_SIZE = 32


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
        encoding = settings.dreamclass_secret_encoding
        self._keys = tuple(signing_key(s, encoding) for s in settings.dreamclass_secrets)
        auth = settings.dreamclass_basic_auth
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
    key = signing_key(settings.dreamclass_secrets[0], settings.dreamclass_secret_encoding)
    document["signature"] = signature(document["id"], key)
    auth = settings.dreamclass_basic_auth
    headers = {} if auth is None else basic_auth_header(*auth)
    return SignedWebhook(orjson.dumps(document), headers)


PROVIDER: Final = Provider(
    name=NAME,
    events=(PAYMENT_CREATED, PAYMENT_UPDATED, PAYMENT_DELETED),
    required=("dreamclass_secrets",),
    authenticator=DreamClass,
    handlers="hookpipe.workers.handlers.dreamclass:handlers",
    sign=sign_example,
    examples="hookpipe.seeds",
    # DreamClass documents one example body; the others differ by their type alone.
    example_aliases={PAYMENT_UPDATED: PAYMENT_CREATED, PAYMENT_DELETED: PAYMENT_CREATED},
)
