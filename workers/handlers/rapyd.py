"""Rapyd INVOICE_PAYMENT_CREATED: record the payment made against an invoice.

Keyed by the payment's id (`data.payment.id`). The card's own data is never decoded, let alone
stored: the ledger keeps the invoice, customer and subscription ids and the payment method's type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import structlog

from hookpipe import tracing
from hookpipe.providers import HandlerContext
from hookpipe.schemas.rapyd import (
    INVOICE_PAYMENT_CREATED,
    InvoicePaymentCreated,
    from_unix,
    invoice_payment_created_decoder,
)
from hookpipe.workers.errors import PermanentError
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.handlers.ordering import is_later
from hookpipe.workers.ledger import Ledger, LedgerEvent, PaymentState
from hookpipe.workers.ledger import Payment as LedgerPayment

PROVIDER: Final = "rapyd"
QUEUE: Final = f"{PROVIDER}.{INVOICE_PAYMENT_CREATED}"

# Rapyd's payment status to the ledger's. ACT and NEW wait for the customer, 3DS or a capture;
# ERR (which also marks a payment that expired unpaid), CAN and EXP never collected anything;
# REV is Rapyd reversing a payment it had closed.
STATUSES: Final[Mapping[str, str]] = {
    "CLO": "paid",
    "ACT": "pending",
    "NEW": "pending",
    "ERR": "failed",
    "CAN": "failed",
    "EXP": "failed",
    "REV": "reversed",
}

# Breaks ties between two states stamped with the same second: the further along wins.
RANKS: Final[Mapping[str, int]] = {
    "pending": 0,
    "failed": 1,
    "paid": 2,
    "refunded": 3,
    "reversed": 3,
}

log = structlog.get_logger()


def handlers(context: HandlerContext) -> dict[str, Handler]:
    """{queue name: handler} for Rapyd's handled events."""
    ledger = context.ledger

    async def handle(delivery: Delivery) -> None:
        await apply_invoice_payment(ledger, delivery)

    return {QUEUE: handle}


async def apply_invoice_payment(ledger: Ledger, delivery: Delivery) -> bool:
    """Record the invoice's payment, unless the ledger holds a later state of it.

    Returns False when the event was applied already. Raises msgspec errors on a bad body and
    PermanentError on a payment status Rapyd does not document.
    """
    with tracing.span("decode"):
        event = invoice_payment_created_decoder.decode(delivery.body)
    payment = event.data.payment
    status = STATUSES.get(payment.status)
    if status is None:
        # The value itself stays out: a reason is copied into headers and logs.
        raise PermanentError(
            f"Rapyd data.payment.status is not one of {', '.join(sorted(STATUSES))}"
        )
    if status == "paid" and payment.refunded:
        status = "refunded"
    # The webhook's creation time (s) orders the states Rapyd reports for one payment.
    state = PaymentState(
        status=status,
        amount=payment.amount,
        currency=payment.currency_code.upper(),
        details=_details(event),
        version=event.created_at * 1000,
    )

    def decide(current: LedgerPayment | None) -> PaymentState | None:
        current_rank = -1 if current is None else RANKS.get(current.status, -1)
        if not is_later(event.created_at * 1000, RANKS[status], current, current_rank):
            return None
        return state

    applied = await ledger.apply(
        LedgerEvent(
            provider=PROVIDER,
            event_id=delivery.event_id,
            event_type=event.type,
            payment_id=payment.id,
            received_at_ms=delivery.received_at_ms,
        ),
        decide,
    )
    log.debug("rapyd payment applied", payment_id=payment.id, status=status, applied=applied)
    return applied


def _details(event: InvoicePaymentCreated) -> dict[str, Any]:
    """Ids, statuses and times; no card data, names or e-mail addresses."""
    invoice = event.data
    payment = invoice.payment
    details: dict[str, Any] = {"invoice_id": invoice.id, "provider_status": payment.status}
    optional: dict[str, Any] = {
        "customer": invoice.customer or payment.customer_token,
        "subscription": invoice.subscription,
        "invoice_status": invoice.status,
        "billing_reason": invoice.billing_reason,
        "ewallet_id": payment.ewallet_id,
        "payment_method_type": payment.payment_method_type,
        "payment_method_category": payment.payment_method_type_category,
        "failure_code": payment.failure_code,
        "error_code": payment.error_code,
        "refunded_amount": str(payment.refunded_amount) if payment.refunded_amount else None,
        "trigger_operation_id": event.trigger_operation_id,
    }
    details.update((key, value) for key, value in optional.items() if value)
    for key, seconds in (("paid_at", payment.paid_at), ("created_at", payment.created_at)):
        moment = from_unix(seconds)
        if moment is not None:
            details[key] = moment.isoformat()
    return details
