"""Flexprice payment.created / updated / failed / success / pending: a payment and its transitions.

Each event carries the whole payment as Flexprice sees it, stamped with `updated_at`; the ledger
keeps the latest one, so a `payment.failed` that arrives after the `payment.success` that
followed it changes nothing but the list of applied events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import structlog

from hookpipe import tracing
from hookpipe.providers import HandlerContext
from hookpipe.schemas.flexprice import PAYMENT_EVENT_TYPES, Payment, payment_event_decoder
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.handlers.ordering import epoch_ms, is_later
from hookpipe.workers.ledger import Ledger, LedgerEvent, PaymentState
from hookpipe.workers.ledger import Payment as LedgerPayment

PROVIDER: Final = "flexprice"

# Flexprice's payment_status to the ledger's status. A partial refund leaves the payment paid
# (details keep "PARTIALLY_REFUNDED"); a voided authorisation is undone, like a reversal.
STATUSES: Final[Mapping[str, str]] = {
    "INITIATED": "pending",
    "PENDING": "pending",
    "PROCESSING": "pending",
    "SUCCEEDED": "paid",
    "OVERPAID": "paid",
    "FAILED": "failed",
    "REFUNDED": "refunded",
    "PARTIALLY_REFUNDED": "paid",
    "VOIDED": "reversed",
}

# Breaks ties between two states stamped with the same updated_at: the further along the
# lifecycle wins (a success after a failed attempt, a refund after the success).
RANKS: Final[Mapping[str, int]] = {
    "INITIATED": 0,
    "PENDING": 1,
    "PROCESSING": 2,
    "FAILED": 3,
    "SUCCEEDED": 4,
    "OVERPAID": 4,
    "PARTIALLY_REFUNDED": 5,
    "REFUNDED": 6,
    "VOIDED": 6,
}

log = structlog.get_logger()


def handlers(context: HandlerContext) -> dict[str, Handler]:
    """{queue name: handler} for every Flexprice payment event."""
    ledger = context.ledger

    async def handle(delivery: Delivery) -> None:
        await apply_payment_event(ledger, delivery)

    return {f"{PROVIDER}.{event_type}": handle for event_type in PAYMENT_EVENT_TYPES}


async def apply_payment_event(ledger: Ledger, delivery: Delivery) -> bool:
    """Record the payment as the event shows it, unless the ledger holds a later state.

    Returns False when the event was applied already. Raises msgspec errors on a bad body.
    """
    with tracing.span("decode"):
        event = payment_event_decoder.decode(delivery.body)
    payment = event.payment
    state = PaymentState(
        status=STATUSES[payment.payment_status],
        amount=payment.amount,
        currency=payment.currency.upper(),
        details=_details(event.event_type, payment),
        version=epoch_ms(payment.updated_at),
    )
    rank = RANKS[payment.payment_status]

    def decide(current: LedgerPayment | None) -> PaymentState | None:
        if not is_later(state.version or 0, rank, current, _rank_of(current)):
            return None
        return state

    applied = await ledger.apply(
        LedgerEvent(
            provider=PROVIDER,
            event_id=delivery.event_id,
            event_type=event.event_type,
            payment_id=payment.id,
            received_at_ms=delivery.received_at_ms,
        ),
        decide,
    )
    log.debug(
        "flexprice payment applied", payment_id=payment.id, status=state.status, applied=applied
    )
    return applied


def _rank_of(current: LedgerPayment | None) -> int:
    status = None if current is None else current.details.get("provider_status")
    return RANKS.get(status, -1) if isinstance(status, str) else -1


def _details(event_type: str, payment: Payment) -> dict[str, Any]:
    """What the ledger keeps beside status and amount: ids and times, never `metadata`, which
    whoever created the payment fills at will and may hold personal data."""
    details: dict[str, Any] = {
        "event_type": event_type,
        "provider_status": payment.payment_status,
        "updated_at": payment.updated_at.isoformat(),
        "attempts": len(payment.attempts),
    }
    optional: dict[str, str | datetime | None] = {
        "invoice_number": payment.invoice_number,
        "destination_type": payment.destination_type,
        "destination_id": payment.destination_id,
        "payment_method_type": payment.payment_method_type,
        "payment_method_id": payment.payment_method_id,
        "payment_gateway": payment.payment_gateway,
        "gateway_payment_id": payment.gateway_payment_id,
        "gateway_tracking_id": payment.gateway_tracking_id,
        "error_message": payment.error_message,
        "created_at": payment.created_at,
        "succeeded_at": payment.succeeded_at,
        "failed_at": payment.failed_at,
        "refunded_at": payment.refunded_at,
    }
    for key, value in optional.items():
        if isinstance(value, datetime):
            details[key] = value.isoformat()
        elif value:
            details[key] = value
    return details
