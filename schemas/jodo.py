"""Jodo: `order.payment.debited` and `direct.payment.cancelled`.

Decoding is two-step: the `Envelope` first (event id, type, time), then the struct of that type.
Fields that hold personal data (the parent's name, phone and e-mail; the student's contact
number and e-mail) are not declared, so msgspec skips them and they never reach a handler.
"""

from __future__ import annotations

from typing import Final

import msgspec

from hookpipe.schemas.common import AwareDatetime, Money, Token, UnixSeconds

ORDER_PAYMENT_DEBITED: Final = "order.payment.debited"
DIRECT_PAYMENT_CANCELLED: Final = "direct.payment.cancelled"


class JodoStruct(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every Jodo struct; unknown fields are ignored, as Jodo may add some."""


class Envelope(JodoStruct, kw_only=True, frozen=True):
    """What every Jodo webhook carries, whatever its type: what the ingress routes it by, and
    the first step of the workers' decoding."""

    event_id: Token
    event: Token
    timestamp: UnixSeconds | None = None  # when the event originated; required by handled types
    version: str | None = None


# --- order.payment.debited ---


class OrderFeeComponent(JodoStruct, kw_only=True, frozen=True):
    component_type: str  # e.g. "TUITION_FEE", "Admission Fee"
    amount: Money


class Note(JodoStruct, kw_only=True, frozen=True):
    """A key/value pair given when the order was created (e.g. an ERP reference)."""

    key: str
    value: str | int | float | bool | None = None


class Order(JodoStruct, kw_only=True, frozen=True):
    identifier: str | None = None
    paid_at: AwareDatetime
    status: str
    details: tuple[OrderFeeComponent, ...]
    notes: tuple[Note, ...] = ()


class OrderPaymentDebitedPayload(JodoStruct, kw_only=True, frozen=True):
    order_id: str
    order: Order


class OrderPaymentDebited(Envelope, kw_only=True, frozen=True):
    timestamp: UnixSeconds
    payload: OrderPaymentDebitedPayload


# --- direct.payment.cancelled ---


class PaymentFeeComponent(JodoStruct, kw_only=True, frozen=True):
    fee_component: str
    amount: Money


class DirectPayment(JodoStruct, kw_only=True, frozen=True):
    id: str
    amount: Money
    mode: str | None = None  # e.g. "cash"
    transaction_id: str | None = None
    settlement_utr: str | None = None
    # Free text typed by school staff: may name people, so it is decoded but never stored.
    notes: str | None = None
    paid_at: AwareDatetime | None = None
    details: tuple[PaymentFeeComponent, ...] = ()


class Grade(JodoStruct, kw_only=True, frozen=True):
    name: str | None = None
    code: str | None = None


class Student(JodoStruct, kw_only=True, frozen=True):
    identifier: str | None = None
    custom_identifier: str | None = None
    collector_code: str | None = None
    academic_year_start: int | None = None
    academic_year_end: int | None = None
    grade: Grade | None = None


class DirectPaymentCancelledPayload(JodoStruct, kw_only=True, frozen=True):
    payment: DirectPayment
    student: Student | None = None
    jodo_student_id: int | None = None


class DirectPaymentCancelled(Envelope, kw_only=True, frozen=True):
    timestamp: UnixSeconds
    payload: DirectPaymentCancelledPayload


Event = OrderPaymentDebited | DirectPaymentCancelled | Envelope

envelope_decoder: Final = msgspec.json.Decoder(Envelope)
# The struct for each event type; another type decodes as its Envelope alone.
DECODERS: Final[dict[str, msgspec.json.Decoder[OrderPaymentDebited | DirectPaymentCancelled]]] = {
    ORDER_PAYMENT_DEBITED: msgspec.json.Decoder(OrderPaymentDebited),
    DIRECT_PAYMENT_CANCELLED: msgspec.json.Decoder(DirectPaymentCancelled),
}


def decode(body: bytes) -> Event:
    """A Jodo webhook's body as the struct of its type; an unknown type gives its Envelope.

    Raises msgspec.DecodeError (not JSON) or msgspec.ValidationError, whose message names the
    failing field's path (e.g. `$.payload.order.paid_at`).
    """
    envelope = envelope_decoder.decode(body)
    decoder = DECODERS.get(envelope.event)
    return envelope if decoder is None else decoder.decode(body)
