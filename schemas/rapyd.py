"""Rapyd: the INVOICE_PAYMENT_CREATED webhook.

Only the fields the handler needs are declared; everything else is skipped while decoding, which
keeps card data (`payment_method_data`: holder name, last digits, BIN) out of memory entirely.
Rapyd writes times as Unix seconds; each struct offers them as timezone-aware datetimes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

from hookpipe.schemas.common import Money, Token, UnixSeconds, from_unix_seconds

INVOICE_PAYMENT_CREATED: Final = "INVOICE_PAYMENT_CREATED"

# Rapyd's payment statuses: ACT active (awaiting 3DS, capture or the customer's action), CLO
# closed and paid, CAN canceled, ERR error (failed, or expired before payment), EXP expired,
# NEW not closed yet, REV reversed by Rapyd.
PAYMENT_STATUSES: Final = ("ACT", "CAN", "CLO", "ERR", "EXP", "NEW", "REV")


def from_unix(seconds: int | None) -> datetime | None:
    """A Rapyd Unix time as a timezone-aware datetime; None (or 0, Rapyd's "unset") as None."""
    return from_unix_seconds(seconds) if seconds else None


class RapydStruct(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every Rapyd struct; unknown fields are ignored, as Rapyd adds some.

    msgspec applies kw_only only to the fields a class declares, and type checkers want frozen
    restated, so subclasses repeat both.
    """


class Envelope(RapydStruct, kw_only=True, frozen=True):
    """What every Rapyd webhook carries, whatever its type: what the ingress routes it by, and
    the first step of the workers' decoding."""

    id: Token  # "wh_...": the webhook's id, unique per event
    type: Token
    created_at: UnixSeconds | None = None  # required by handled types
    status: str | None = None  # the webhook's delivery status, e.g. "NEW"
    trigger_operation_id: str | None = None


class _Created(Envelope, kw_only=True, frozen=True):
    """An envelope of a handled type: its time is required."""

    created_at: UnixSeconds

    @property
    def created(self) -> datetime:
        """`created_at` as a timezone-aware datetime."""
        return from_unix_seconds(self.created_at)


class Payment(RapydStruct, kw_only=True, frozen=True):
    """The payment made against the invoice (`data.payment`)."""

    id: str
    amount: Money
    currency_code: str
    status: str  # one of PAYMENT_STATUSES
    paid: bool = False
    paid_at: UnixSeconds | None = None  # Unix seconds; 0 or null until paid
    created_at: UnixSeconds | None = None
    captured: bool | None = None
    refunded: bool = False
    refunded_amount: Money | None = None
    original_amount: Money | None = None
    customer_token: str | None = None
    invoice: str | None = None
    ewallet_id: str | None = None
    # A token such as "card_..."; the card's own data is never decoded.
    payment_method: str | None = None
    payment_method_type: str | None = None
    payment_method_type_category: str | None = None
    country_code: str | None = None
    failure_code: str | None = None
    error_code: str | None = None
    initiation_type: str | None = None

    @property
    def paid_time(self) -> datetime | None:
        """`paid_at` as a timezone-aware datetime, or None when not paid."""
        return from_unix(self.paid_at)


class Invoice(RapydStruct, kw_only=True, frozen=True):
    """`data` of INVOICE_PAYMENT_CREATED: the invoice, with the payment inside."""

    id: str
    payment: Payment
    status: str | None = None  # the invoice's own status, e.g. "paid"
    currency: str | None = None
    total: Money | None = None
    customer: str | None = None
    subscription: str | None = None
    billing_reason: str | None = None
    attempt_count: int | None = None
    created_at: UnixSeconds | None = None


class InvoicePaymentCreated(_Created, kw_only=True, frozen=True):
    """INVOICE_PAYMENT_CREATED: a payment against an invoice was created."""

    data: Invoice


envelope_decoder: Final = msgspec.json.Decoder(Envelope)
invoice_payment_created_decoder: Final = msgspec.json.Decoder(InvoicePaymentCreated)
