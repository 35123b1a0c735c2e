"""Acme Billing, a provider hookpipe does not ship, added as a plugin.

Acme signs the raw body with HMAC-SHA256 and sends the lowercase hex digest in `X-Acme-Signature`.
Its one handled event, `payment.succeeded`, records the payment as paid.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

import msgspec

from hookpipe.ingress.envelope import Envelope, decode
from hookpipe.ingress.errors import AuthenticationFailed
from hookpipe.ingress.example import with_fields
from hookpipe.providers import HandlerContext, Provider, SignedWebhook
from hookpipe.schemas.common import Token
from hookpipe.settings import Settings, setting
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import LedgerEvent, Payment, PaymentState

SIGNATURE_HEADER = "X-Acme-Signature"
PAYMENT_SUCCEEDED = "payment.succeeded"


@dataclass(frozen=True, slots=True)
class AcmeSettings:
    """Read from HOOKPIPE_ACME_* (and HOOKPIPE_ACME_*_FILE) with hookpipe's own settings."""

    ENV_PREFIX: ClassVar[str] = "HOOKPIPE_ACME_"

    secret: str | None = setting(None, str, help="Acme's webhook signing secret", secret=True)


# --- schemas: one envelope (what the ingress routes by), then the event ---


class AcmeEnvelope(msgspec.Struct, kw_only=True, frozen=True):
    id: Token
    type: Token


class AcmePayment(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    amount: Decimal
    currency: str


class PaymentSucceeded(AcmeEnvelope, kw_only=True, frozen=True):
    created: int
    payment: AcmePayment


envelope_decoder = msgspec.json.Decoder(AcmeEnvelope)
payment_succeeded_decoder = msgspec.json.Decoder(PaymentSucceeded)


# --- ingress: authentication and the signer of test webhooks ---


def _digest(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AcmeAuthenticator:
    def __init__(self, settings: Settings) -> None:
        secret = settings.section(AcmeSettings).secret
        assert secret is not None  # the registry builds it only once the secret is set
        self._secret = secret

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        provided = headers.get(SIGNATURE_HEADER)
        if not provided:
            raise AuthenticationFailed("missing signature")
        if not hmac.compare_digest(provided.encode(), _digest(self._secret, body).encode()):
            raise AuthenticationFailed("signature mismatch")
        envelope = decode(envelope_decoder, body)
        return Envelope(envelope.id, envelope.type)


def sign(
    settings: Settings, event: str, body: bytes, *, fresh: bool = False, now: float = 0.0
) -> SignedWebhook:
    if fresh:
        body = with_fields(body, id=f"evt_{uuid.uuid4().hex}")
    secret = settings.section(AcmeSettings).secret
    assert secret is not None
    return SignedWebhook(body, {SIGNATURE_HEADER: _digest(secret, body)})


# --- workers: the handler, on the ledger ---


def handlers(context: HandlerContext) -> dict[str, Handler]:
    ledger = context.ledger

    async def succeeded(delivery: Delivery) -> None:
        event = payment_succeeded_decoder.decode(delivery.body)
        # Only what the ledger needs: the customer's e-mail is not even decoded.
        state = PaymentState(
            status="paid",
            amount=event.payment.amount,
            currency=event.payment.currency,
            details={"event_id": event.id},
            version=event.created * 1000,
        )

        def decide(current: Payment | None) -> PaymentState | None:
            return state

        await ledger.apply(
            LedgerEvent(
                provider="acme",
                event_id=delivery.event_id,
                event_type=delivery.event_type,
                payment_id=event.payment.id,
                received_at_ms=delivery.received_at_ms,
            ),
            decide,
        )

    return {f"acme.{PAYMENT_SUCCEEDED}": succeeded}


PROVIDER = Provider(
    name="acme",
    events=(PAYMENT_SUCCEEDED,),
    required=("secret",),
    settings_section=AcmeSettings,
    authenticator=AcmeAuthenticator,
    handlers=handlers,
    sign=sign,
    examples="acme_hookpipe",
)
