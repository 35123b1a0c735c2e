"""Flexprice: the payment webhooks, `{event_type, payment{...}}`.

Flexprice writes money as decimal strings ("149.99") and times as RFC 3339 with a zone. Decoding is
two-step: the `Envelope` (just `event_type`) first, then the payload for that type.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

import msgspec

from hookpipe.schemas.common import AwareDatetime, Money, Token

# Every event type Flexprice documents for its webhooks.
EventType = Literal[
    "subscription.created",
    "subscription.draft.created",
    "subscription.activated",
    "subscription.updated",
    "subscription.paused",
    "subscription.cancelled",
    "subscription.resumed",
    "subscription.phase.created",
    "subscription.phase.updated",
    "subscription.phase.deleted",
    "feature.created",
    "feature.updated",
    "feature.deleted",
    "feature.wallet_balance.alert",
    "entitlement.created",
    "entitlement.updated",
    "entitlement.deleted",
    "wallet.created",
    "wallet.updated",
    "wallet.terminated",
    "wallet.transaction.created",
    "payment.created",
    "payment.updated",
    "payment.failed",
    "payment.success",
    "payment.pending",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "invoice.update.finalized",
    "invoice.update.payment",
    "invoice.update.voided",
    "invoice.update",
    "invoice.payment.overdue",
    "wallet.credit_balance.dropped",
    "wallet.credit_balance.recovered",
    "wallet.ongoing_balance.dropped",
    "wallet.ongoing_balance.recovered",
    "subscription.renewal.due",
    "invoice.communication.triggered",
    "credit_note.created",
    "credit_note.updated",
]
EVENT_TYPES: Final[tuple[str, ...]] = get_args(EventType)
PAYMENT_EVENT_TYPES: Final = tuple(t for t in EVENT_TYPES if t.startswith("payment."))

# A payment's lifecycle in Flexprice (its PaymentStatus type).
PaymentStatus = Literal[
    "INITIATED",
    "PENDING",
    "PROCESSING",
    "SUCCEEDED",
    "OVERPAID",
    "FAILED",
    "REFUNDED",
    "PARTIALLY_REFUNDED",
    "VOIDED",
]
PAYMENT_STATUSES: Final[tuple[str, ...]] = get_args(PaymentStatus)


class FlexpriceStruct(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every Flexprice struct; unknown fields are ignored, as Flexprice adds some.

    msgspec applies kw_only only to the fields a class declares, and type checkers want frozen
    restated, so subclasses repeat both.
    """


class Envelope(FlexpriceStruct, kw_only=True, frozen=True):
    """What every Flexprice webhook carries: its type. The event id is the svix-id header."""

    event_type: Token  # not EventType: a type added later must still decode this far


class PaymentAttempt(FlexpriceStruct, kw_only=True, frozen=True):
    """One try at collecting the payment."""

    id: str
    attempt_number: int
    payment_id: str | None = None
    error_message: str | None = None
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None


class Payment(FlexpriceStruct, kw_only=True, frozen=True):
    """`payment` of a payment.* event."""

    id: str
    amount: Money  # sent as a decimal string, e.g. "149.99"
    currency: str
    payment_status: PaymentStatus
    updated_at: AwareDatetime  # orders the updates of one payment
    created_at: AwareDatetime | None = None
    destination_id: str | None = None
    destination_type: str | None = None  # "INVOICE", ...
    invoice_number: str | None = None
    payment_method_type: str | None = None  # "CARD", "ACH", "OFFLINE", "CREDITS", ...
    payment_method_id: str | None = None
    payment_gateway: str | None = None
    gateway_payment_id: str | None = None
    gateway_tracking_id: str | None = None
    error_message: str | None = None
    succeeded_at: AwareDatetime | None = None
    failed_at: AwareDatetime | None = None
    refunded_at: AwareDatetime | None = None
    tenant_id: str | None = None
    track_attempts: bool | None = None
    attempts: tuple[PaymentAttempt, ...] = ()
    # Free-form and set by whoever made the payment: decoded, never stored, as it may hold
    # personal data.
    metadata: dict[str, Any] | None = None


class PaymentEvent(FlexpriceStruct, kw_only=True, frozen=True):
    """payment.created / updated / failed / success / pending."""

    event_type: EventType
    payment: Payment


envelope_decoder: Final = msgspec.json.Decoder(Envelope)
payment_event_decoder: Final = msgspec.json.Decoder(PaymentEvent)
