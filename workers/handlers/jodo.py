"""Jodo: a debited order marks the payment paid; a cancelled direct payment reverses it.

The two travel in different queues, so a cancellation may arrive before the payment it cancels.
A payment's state is therefore a function of the events seen, whatever their order: details keep
the debit's record under "order" and the cancellation's under "reversal"; a reversal, once seen,
decides the status; the debit's amount, once seen, is the amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import msgspec
import structlog

from hookpipe import tracing
from hookpipe.providers import HandlerContext
from hookpipe.schemas.jodo import (
    DIRECT_PAYMENT_CANCELLED,
    ORDER_PAYMENT_DEBITED,
    DirectPaymentCancelled,
    OrderPaymentDebited,
    decode,
)
from hookpipe.workers.errors import PermanentError
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import Ledger, LedgerEvent, Payment, PaymentState

PROVIDER: Final = "jodo"
CURRENCY: Final = "INR"  # Jodo collects school fees in India, in rupees only

log = structlog.get_logger()


def handlers(context: HandlerContext) -> dict[str, Handler]:
    """{queue name: handler} for Jodo's handled events."""
    ledger = context.ledger

    async def debited(delivery: Delivery) -> None:
        await apply_order_payment_debited(ledger, delivery)

    async def cancelled(delivery: Delivery) -> None:
        await apply_direct_payment_cancelled(ledger, delivery)

    return {
        f"{PROVIDER}.{ORDER_PAYMENT_DEBITED}": debited,
        f"{PROVIDER}.{DIRECT_PAYMENT_CANCELLED}": cancelled,
    }


async def apply_order_payment_debited(ledger: Ledger, delivery: Delivery) -> bool:
    """Mark the order paid; False when the event was applied already.

    Raises msgspec errors on a bad body, PermanentError on a body of another event type.
    """
    with tracing.span("decode"):
        event = decode(delivery.body)
    if not isinstance(event, OrderPaymentDebited):
        raise PermanentError(f"expected a Jodo {ORDER_PAYMENT_DEBITED} event, got another type")
    order = event.payload.order
    record = {
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "order_identifier": order.identifier,
        "order_status": order.status,
        "paid_at": order.paid_at,
        "amount": sum((fee.amount for fee in order.details), Decimal(0)),
        "fee_components": [
            {"component_type": fee.component_type, "amount": fee.amount} for fee in order.details
        ],
        "notes": [{"key": note.key, "value": note.value} for note in order.notes],
    }
    return await _apply(ledger, delivery, event.payload.order_id, "order", _json_ready(record))


async def apply_direct_payment_cancelled(ledger: Ledger, delivery: Delivery) -> bool:
    """Reverse the payment, keeping the reversal's own record; False when applied already.

    Raises msgspec errors on a bad body, PermanentError on a body of another event type.
    """
    with tracing.span("decode"):
        event = decode(delivery.body)
    if not isinstance(event, DirectPaymentCancelled):
        raise PermanentError(f"expected a Jodo {DIRECT_PAYMENT_CANCELLED} event, got another type")
    payment = event.payload.payment
    student = event.payload.student
    record: dict[str, Any] = {
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "amount": payment.amount,
        "mode": payment.mode,
        "transaction_id": payment.transaction_id,
        "settlement_utr": payment.settlement_utr,
        "paid_at": payment.paid_at,
        "fee_components": [
            {"fee_component": fee.fee_component, "amount": fee.amount} for fee in payment.details
        ],
        # Identifiers only: the student's contact number and e-mail are not even decoded.
        "student": {
            "identifier": student.identifier if student else None,
            "custom_identifier": student.custom_identifier if student else None,
            "jodo_student_id": event.payload.jodo_student_id,
        },
    }
    return await _apply(ledger, delivery, payment.id, "reversal", _json_ready(record))


async def _apply(
    ledger: Ledger, delivery: Delivery, payment_id: str, part: str, record: dict[str, Any]
) -> bool:
    """Merge one event's record into the payment's details and derive its state from them."""

    def decide(current: Payment | None) -> PaymentState | None:
        details = dict(current.details) if current is not None else {}
        held = details.get(part)
        if held is not None and _order_key(held) >= _order_key(record):
            return None  # the ledger holds this part from a later event already
        details[part] = record
        return state_of(details)

    applied = await ledger.apply(
        LedgerEvent(
            provider=PROVIDER,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            payment_id=payment_id,
            received_at_ms=delivery.received_at_ms,
        ),
        decide,
    )
    log.debug("jodo payment applied", payment_id=payment_id, part=part, applied=applied)
    return applied


def state_of(details: Mapping[str, Any]) -> PaymentState:
    """The payment's state from the records its events left: the same whatever their order."""
    order = details.get("order")
    reversal = details.get("reversal")
    # decide() has just put one of them in.
    amount_from = order if order is not None else reversal
    assert amount_from is not None
    return PaymentState(
        status="reversed" if reversal is not None else "paid",
        amount=Decimal(amount_from["amount"]),
        currency=CURRENCY,
        details=details,
        version=max(int(r["timestamp"]) for r in (order, reversal) if r is not None) * 1000,
    )


def _order_key(record: Mapping[str, Any]) -> tuple[int, str]:
    """Which of two records of one part is the later: Jodo's time, then the event id on a tie."""
    return int(record["timestamp"]), str(record["event_id"])


def _json_ready(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the ledger gives it back (Decimals and datetimes as strings), so that a
    record read from the ledger and one built now compare and store alike."""
    ready: dict[str, Any] = msgspec.to_builtins(record)
    return ready
