"""DreamClass: the payment webhooks and the REST API answers the workers fetch.

The webhook's signature covers only its `id`, so what `data` says is a hint: the handler trusts
the invoice and payment methods it fetches from the DreamClass API. Decoding is two-step: the
`Envelope` first (type, tenant, timestamp), then the payload for that type.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from hookpipe.schemas.common import AwareDatetime, Id, Money, Token, UnixMillis

# Payment status codes, as the webhook documentation lists them.
STATUS_VALID: Final = 1
STATUS_INVALID: Final = 2
STATUS_PENDING: Final = 3
STATUS_REFUNDED: Final = 4

PAYMENT_CREATED: Final = "PAYMENT_CREATED"
PAYMENT_UPDATED: Final = "PAYMENT_UPDATED"
PAYMENT_DELETED: Final = "PAYMENT_DELETED"


class DreamClassStruct(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every DreamClass struct; unknown fields are ignored, as DreamClass adds some.

    msgspec applies kw_only only to the fields a class declares, and type checkers want frozen
    restated, so subclasses repeat both.
    """


class Envelope(DreamClassStruct, kw_only=True, frozen=True):
    """What every DreamClass webhook carries, whatever its type: what the ingress checks and
    routes it by (the signature is of `id` alone), and the first step of the workers' decoding."""

    id: Token
    type: Token
    # Optional here, so that the ingress answers a missing signature with 401; required below.
    signature: str | None = None
    tenant: str | None = None  # the school's DreamClass domain, e.g. "my-school"
    timestamp: UnixMillis | None = None  # ms since the epoch, when DreamClass sent it


class _Sent(Envelope, kw_only=True, frozen=True):
    """An envelope of a handled type: its tenant and time are required."""

    tenant: str
    timestamp: UnixMillis

    @property
    def sent_at(self) -> datetime:
        """`timestamp` as a timezone-aware datetime."""
        seconds, ms = divmod(self.timestamp, 1000)  # integer parts: no float rounding
        return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=ms)


class PaymentMethodRef(DreamClassStruct, kw_only=True, frozen=True):
    """The payment method a webhook names; GetPaymentMethods says what it is."""

    id: Id
    log_only: bool | None = msgspec.field(default=None, name="logOnlyPaymentMethod")


class PaymentData(DreamClassStruct, kw_only=True, frozen=True):
    """`data` of PAYMENT_CREATED / PAYMENT_UPDATED; every field is required by the docs."""

    id: Id
    amount: Money
    created_at: AwareDatetime = msgspec.field(name="createdAt")
    invoice_id: Id = msgspec.field(name="invoiceId")
    # Free text typed by school staff: may name people, so it is decoded but never stored.
    public_notes: str | None = msgspec.field(default=None, name="publicNotes")
    private_notes: str | None = msgspec.field(default=None, name="privateNotes")
    payment_method: PaymentMethodRef = msgspec.field(name="paymentmethod")
    # Not in the documented payload, but its status codes are listed beside it: read it if sent.
    status: int | None = None


class DeletedPaymentData(DreamClassStruct, kw_only=True, frozen=True):
    """`data` of PAYMENT_DELETED: only the payment id is relied upon, the rest may be missing."""

    id: Id
    amount: Money | None = None
    invoice_id: Id | None = msgspec.field(default=None, name="invoiceId")


class PaymentEvent(_Sent, kw_only=True, frozen=True):
    """PAYMENT_CREATED or PAYMENT_UPDATED."""

    data: PaymentData


class PaymentDeletedEvent(_Sent, kw_only=True, frozen=True):
    """PAYMENT_DELETED."""

    data: DeletedPaymentData


# --- The DreamClass API's answers (GetInvoice, GetPaymentMethods) ---


class ApiPaymentMethodRef(DreamClassStruct, kw_only=True, frozen=True):
    """A payment method as an invoice's payment names it."""

    id: Id


class ApiPayment(DreamClassStruct, kw_only=True, frozen=True):
    """A payment as GetInvoice lists it; a field the API leaves out stays empty."""

    id: Id
    amount: Money | None = None
    status: int | None = None
    currency: str | None = None
    created_at: AwareDatetime | None = msgspec.field(default=None, name="createdAt")
    # Sent as an object or as a bare id, depending on the endpoint.
    payment_method: ApiPaymentMethodRef | int | None = msgspec.field(
        default=None, name="paymentmethod"
    )

    @property
    def payment_method_id(self) -> int | None:
        """The id of the payment method, whichever way the API wrote it."""
        if isinstance(self.payment_method, ApiPaymentMethodRef):
            return self.payment_method.id
        return self.payment_method


class Invoice(DreamClassStruct, kw_only=True, frozen=True):
    """GetInvoice's answer: the invoice and the payments made against it."""

    id: Id
    currency: str | None = None
    invoice_number: str | None = msgspec.field(default=None, name="invoiceNumber")
    payments: tuple[ApiPayment, ...] = ()

    def payment(self, payment_id: int) -> ApiPayment | None:
        """The invoice's payment with that id, or None when the invoice does not list it."""
        return next((p for p in self.payments if p.id == payment_id), None)


class PaymentMethod(DreamClassStruct, kw_only=True, frozen=True):
    """One entry of GetPaymentMethods (Cash, Bank Transfer, Online, Check, ...)."""

    id: Id
    name: str | None = None
    translation: Any = None  # untyped in the docs: a label, or a map of labels per language
    log_only: bool | None = msgspec.field(default=None, name="logOnlyPaymentMethod")

    @property
    def label(self) -> str | None:
        """A readable name: `name`, else `translation` when it is text."""
        if self.name:
            return self.name
        return self.translation if isinstance(self.translation, str) else None


# Decoders are built once: msgspec compiles each type's decoding plan at construction.
envelope_decoder: Final = msgspec.json.Decoder(Envelope)
payment_event_decoder: Final = msgspec.json.Decoder(PaymentEvent)
payment_deleted_decoder: Final = msgspec.json.Decoder(PaymentDeletedEvent)
invoice_decoder: Final = msgspec.json.Decoder(Invoice)
payment_methods_decoder: Final = msgspec.json.Decoder(tuple[PaymentMethod, ...])
