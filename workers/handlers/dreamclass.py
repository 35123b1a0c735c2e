"""DreamClass PAYMENT_CREATED / PAYMENT_UPDATED / PAYMENT_DELETED.

The webhook's signature covers only its `id`, so `data` is a pointer, not a fact: the handler
fetches the invoice (GetInvoice) and the payment methods (GetPaymentMethods) from the DreamClass
API and records the payment as the API describes it. A field the API leaves out falls back to the
webhook's, and `details["from_webhook"]` lists which. The envelope's `timestamp` orders the
events of one payment, so an older update never overwrites a newer one, and a deletion wins over
any earlier creation or update whatever the arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.providers import HandlerContext
from hookpipe.schemas.dreamclass import (
    PAYMENT_CREATED,
    PAYMENT_DELETED,
    PAYMENT_UPDATED,
    STATUS_INVALID,
    STATUS_PENDING,
    STATUS_REFUNDED,
    STATUS_VALID,
    ApiPayment,
    Invoice,
    PaymentEvent,
    PaymentMethod,
    payment_deleted_decoder,
    payment_event_decoder,
)
from hookpipe.workers.dreamclass_api import NOT_CONFIGURED, DreamClassApi, DreamClassNotFound
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.handlers.ordering import is_later
from hookpipe.workers.ledger import Ledger, LedgerEvent, PaymentState
from hookpipe.workers.ledger import Payment as LedgerPayment

PROVIDER: Final = "dreamclass"

STATUSES: Final[Mapping[int, str]] = {
    STATUS_VALID: "paid",
    STATUS_INVALID: "invalid",
    STATUS_PENDING: "pending",
    STATUS_REFUNDED: "refunded",
}

# Breaks ties between two events stamped with the same millisecond: a deletion ends the story,
# and an update follows the creation.
RANKS: Final[Mapping[str, int]] = {PAYMENT_CREATED: 0, PAYMENT_UPDATED: 1, PAYMENT_DELETED: 2}

log = structlog.get_logger()


def handlers(context: HandlerContext) -> dict[str, Handler]:
    """{queue name: handler} for DreamClass's payment events, with an API client of their own
    when the DreamClass API is configured (closed when the worker stops)."""
    own = context.settings.section(DreamClassSettings)
    api = DreamClassApi(own) if own.api_configured else None
    if api is not None:
        context.resources.push_async_callback(api.close)
    return payment_handlers(context.ledger, api)


def payment_handlers(ledger: Ledger, api: DreamClassApi | None) -> dict[str, Handler]:
    """{queue name: handler} for DreamClass's payment events, with this API client.

    `api` is None when the DreamClass API is not configured: every message then dead-letters
    with a reason that says which settings are missing, and can be replayed once they are set.
    """
    payments = DreamClassPayments(ledger, api)
    return {
        f"{PROVIDER}.{PAYMENT_CREATED}": payments.record,
        f"{PROVIDER}.{PAYMENT_UPDATED}": payments.record,
        f"{PROVIDER}.{PAYMENT_DELETED}": payments.delete,
    }


class DreamClassPayments:
    """The DreamClass payment handlers, sharing one ledger and one API client."""

    def __init__(self, ledger: Ledger, api: DreamClassApi | None) -> None:
        self._ledger = ledger
        self._api = api

    @property
    def api(self) -> DreamClassApi:
        """The API client; PermanentError, naming the missing settings, when there is none."""
        if self._api is None:
            raise PermanentError(NOT_CONFIGURED)
        return self._api

    async def record(self, delivery: Delivery) -> None:
        """PAYMENT_CREATED / PAYMENT_UPDATED: record the payment as the DreamClass API shows it."""
        event = payment_event_decoder.decode(delivery.body)
        if event.type not in (PAYMENT_CREATED, PAYMENT_UPDATED):
            raise PermanentError(f"DreamClass event type {event.type!r} in a payment queue")
        api = self.api
        data = event.data
        invoice = await api.get_invoice(event.tenant, data.invoice_id)
        listed = invoice.payment(data.id)
        state: PaymentState | None = None
        if listed is not None:
            method_id = listed.payment_method_id or data.payment_method.id
            methods = await api.get_payment_methods(event.tenant)
            state = _recorded_state(event, invoice, listed, methods.get(method_id), method_id)
        rank = RANKS[event.type]

        def decide(current: LedgerPayment | None) -> PaymentState | None:
            if not is_later(event.timestamp, rank, current, _rank_of(current)):
                return None  # the ledger holds a later state: this event only joins the list
            if state is None:
                # The API does not list the payment (yet): it may lag behind its own webhook.
                raise TransientError(
                    f"DreamClass invoice {invoice.id} does not list payment {data.id}"
                )
            return state

        await self._apply(delivery, event.type, str(data.id), decide)

    async def delete(self, delivery: Delivery) -> None:
        """PAYMENT_DELETED: mark the payment deleted, once the API no longer lists it."""
        event = payment_deleted_decoder.decode(delivery.body)
        if event.type != PAYMENT_DELETED:
            raise PermanentError(f"DreamClass event type {event.type!r} in the deletion queue")
        api = self.api
        payment_id = str(event.data.id)
        invoice_id = event.data.invoice_id
        if invoice_id is None:  # a deletion may say less: the ledger may know the invoice
            known = await self._ledger.get(PROVIDER, payment_id)
            recorded_invoice = None if known is None else known.details.get("invoice_id")
            invoice_id = recorded_invoice if isinstance(recorded_invoice, int) else None
        confirmed = False
        if invoice_id is not None:
            try:
                invoice = await api.get_invoice(event.tenant, invoice_id)
            except DreamClassNotFound:
                confirmed = True  # the whole invoice is gone, and its payments with it
            else:
                if invoice.payment(event.data.id) is not None:
                    raise TransientError(
                        f"DreamClass invoice {invoice_id} still lists payment {payment_id}"
                    )
                confirmed = True
        rank = RANKS[PAYMENT_DELETED]

        def decide(current: LedgerPayment | None) -> PaymentState | None:
            if not is_later(event.timestamp, rank, current, _rank_of(current)):
                return None
            details: dict[str, Any] = (
                dict(current.details) if current is not None else {"tenant": event.tenant}
            )
            details.update(
                event_type=PAYMENT_DELETED,
                deleted_at=event.sent_at.isoformat(),
                # False when no invoice id was known to ask the API about.
                deletion_confirmed=confirmed,
            )
            if invoice_id is not None:
                details["invoice_id"] = invoice_id
            amount = None if current is None else current.amount
            if current is None and event.data.amount is not None:
                amount = event.data.amount
                details["from_webhook"] = ["amount"]
            return PaymentState(
                status="deleted",
                amount=amount,
                currency=None if current is None else current.currency,
                details=details,
                version=event.timestamp,
            )

        await self._apply(delivery, PAYMENT_DELETED, payment_id, decide)

    async def _apply(
        self,
        delivery: Delivery,
        event_type: str,
        payment_id: str,
        decide: Callable[[LedgerPayment | None], PaymentState | None],
    ) -> None:
        applied = await self._ledger.apply(
            LedgerEvent(
                provider=PROVIDER,
                event_id=delivery.event_id,
                event_type=event_type,
                payment_id=payment_id,
                received_at_ms=delivery.received_at_ms,
            ),
            decide,
        )
        log.debug("dreamclass payment applied", payment_id=payment_id, applied=applied)


def _rank_of(current: LedgerPayment | None) -> int:
    event_type = None if current is None else current.details.get("event_type")
    return RANKS.get(event_type, -1) if isinstance(event_type, str) else -1


def _recorded_state(
    event: PaymentEvent,
    invoice: Invoice,
    listed: ApiPayment,
    method: PaymentMethod | None,
    method_id: int,
) -> PaymentState:
    """The payment as the API lists it; the webhook fills only what the API leaves out."""
    data = event.data
    from_webhook: list[str] = []
    amount = listed.amount
    if amount is None:
        amount = data.amount
        from_webhook.append("amount")
    status_code = listed.status
    if status_code is None and data.status is not None:
        status_code = data.status
        from_webhook.append("status")
    if status_code is None:
        raise PermanentError(
            f"DreamClass gives no status for payment {data.id} of invoice {invoice.id}"
        )
    status = STATUSES.get(status_code)
    if status is None:
        raise PermanentError(f"DreamClass payment status {status_code} is not a known one")
    created_at = listed.created_at
    if created_at is None:
        created_at = data.created_at
        from_webhook.append("created_at")
    if method is None:
        from_webhook.append("payment_method")
    details: dict[str, Any] = {
        "event_type": event.type,
        "tenant": event.tenant,
        "invoice_id": invoice.id,
        "status_code": status_code,
        "created_at": created_at.isoformat(),
        "payment_method": {
            "id": method_id,
            "name": None if method is None else method.label,
            "log_only": data.payment_method.log_only if method is None else method.log_only,
        },
    }
    if invoice.invoice_number:
        details["invoice_number"] = invoice.invoice_number
    if from_webhook:
        details["from_webhook"] = from_webhook
    # The notes are free text typed by school staff and may name people: never stored.
    return PaymentState(
        status=status,
        amount=amount,
        currency=listed.currency or invoice.currency,
        details=details,
        version=event.timestamp,
    )
