"""DreamClass PAYMENT_CREATED / PAYMENT_UPDATED / PAYMENT_DELETED.

DreamClass signs only the webhook's `id`: its `type`, `timestamp`, `tenant` and `data` could be
changed by anyone holding one genuine webhook. So they only ever ask a question and never answer
it. The type routes the message (the queue is the type); the tenant, invoice and payment ids say
where to look; what is recorded is what the DreamClass API shows when the event is handled:
- a creation or update records the payment as GetInvoice lists it (with GetPaymentMethods' name
  of its method), and nothing from the webhook; a payment the API does not list yet is retried,
  unless the ledger has it deleted (an old event arriving late);
- a deletion is recorded only once the API no longer lists the payment (or the invoice is gone);
  one that names no invoice the ledger does not know either cannot be confirmed and is
  dead-lettered.
Once the ledger has a payment from the API, its recorded tenant and invoice are asked about, not
the webhook's. The order is the ledger's own (each event records the API's view at that moment):
the webhook's timestamp orders nothing. An event is its id and its type, so that a genuine id
under a forged type cannot take the place of the genuine event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from hookpipe import tracing
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
    PaymentMethod,
    payment_deleted_decoder,
    payment_event_decoder,
)
from hookpipe.workers.dreamclass_api import NOT_CONFIGURED, DreamClassApi, DreamClassNotFound
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import Ledger, LedgerEvent, PaymentState
from hookpipe.workers.ledger import Payment as LedgerPayment

PROVIDER: Final = "dreamclass"

STATUSES: Final[Mapping[int, str]] = {
    STATUS_VALID: "paid",
    STATUS_INVALID: "invalid",
    STATUS_PENDING: "pending",
    STATUS_REFUNDED: "refunded",
}

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
        with tracing.span("decode"):
            event = payment_event_decoder.decode(delivery.body)
        event_type = _queue_type(delivery, (PAYMENT_CREATED, PAYMENT_UPDATED))
        api = self.api
        data = event.data
        payment_id = str(data.id)
        known = await self._ledger.get(PROVIDER, payment_id)
        tenant, invoice_id = _where(known, event.tenant, data.invoice_id)
        if invoice_id is None:
            raise PermanentError(f"DreamClass {event_type} of payment {data.id} names no invoice")
        invoice = await api.get_invoice(tenant, invoice_id)
        listed = invoice.payment(data.id)
        state: PaymentState | None = None
        if listed is not None:
            method_id = listed.payment_method_id
            methods = await api.get_payment_methods(tenant)
            method = None if method_id is None else methods.get(method_id)
            state = _recorded_state(event_type, tenant, invoice, listed, method, method_id)

        def decide(current: LedgerPayment | None) -> PaymentState | None:
            if state is not None:
                return state  # what the API shows now is the payment's state
            if current is not None and current.status == "deleted":
                return None  # an old event of a payment since deleted: it joins the list
            # The API does not list the payment (yet): it may lag behind its own webhook.
            raise TransientError(f"DreamClass invoice {invoice.id} does not list payment {data.id}")

        await self._apply(delivery, event_type, payment_id, decide)

    async def delete(self, delivery: Delivery) -> None:
        """PAYMENT_DELETED: mark the payment deleted, once the API no longer lists it."""
        with tracing.span("decode"):
            event = payment_deleted_decoder.decode(delivery.body)
        event_type = _queue_type(delivery, (PAYMENT_DELETED,))
        api = self.api
        payment_id = str(event.data.id)
        known = await self._ledger.get(PROVIDER, payment_id)
        tenant, invoice_id = _where(known, event.tenant, event.data.invoice_id)
        if invoice_id is None:
            # Nothing to ask the API about: a deletion that cannot be confirmed is not recorded.
            raise PermanentError(
                f"DreamClass deletion of payment {payment_id} names no invoice and the ledger "
                "knows none: it cannot be confirmed with the API"
            )
        try:
            invoice = await api.get_invoice(tenant, invoice_id)
        except DreamClassNotFound:
            pass  # the whole invoice is gone, and its payments with it
        else:
            if invoice.payment(event.data.id) is not None:
                raise TransientError(
                    f"DreamClass invoice {invoice_id} still lists payment {payment_id}"
                )

        def decide(current: LedgerPayment | None) -> PaymentState | None:
            if current is not None and current.status == "deleted":
                return None
            # Only an invoice the API listed the payment in is recorded (by a creation or an
            # update): the webhook's is what was asked about, not a fact about the payment.
            details: dict[str, Any] = (
                dict(current.details) if current is not None else {"tenant": tenant}
            )
            details["event_type"] = PAYMENT_DELETED
            return PaymentState(
                status="deleted",
                amount=None if current is None else current.amount,
                currency=None if current is None else current.currency,
                details=details,
                version=None,
            )

        await self._apply(delivery, event_type, payment_id, decide)

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
                # Only the id is signed: a copy of a genuine webhook with another type must not
                # stand in for the genuine one, so an event is its id and its type.
                event_id=f"{delivery.event_id}:{event_type}",
                event_type=event_type,
                payment_id=payment_id,
                received_at_ms=delivery.received_at_ms,
            ),
            decide,
        )
        log.debug("dreamclass payment applied", payment_id=payment_id, applied=applied)


def _queue_type(delivery: Delivery, expected: tuple[str, ...]) -> str:
    """The event type of the queue the message came from (what routed it)."""
    event_type = delivery.queue.removeprefix(f"{PROVIDER}.")
    if event_type not in expected:
        raise PermanentError(f"DreamClass queue {delivery.queue!r} is not one of this handler's")
    return event_type


def _where(
    known: LedgerPayment | None, tenant: str, invoice_id: int | None
) -> tuple[str, int | None]:
    """The tenant and invoice to ask the API about: those the ledger recorded when the API
    listed this payment, else the webhook's (unsigned, so only ever a question, never an
    answer)."""
    if known is not None:
        recorded_tenant = known.details.get("tenant")
        recorded_invoice = known.details.get("invoice_id")
        if isinstance(recorded_tenant, str) and isinstance(recorded_invoice, int):
            return recorded_tenant, recorded_invoice
    return tenant, invoice_id


def _recorded_state(
    event_type: str,
    tenant: str,
    invoice: Invoice,
    listed: ApiPayment,
    method: PaymentMethod | None,
    method_id: int | None,
) -> PaymentState:
    """The payment as the API lists it, and nothing from the webhook."""
    if listed.status is None:
        raise PermanentError(
            f"DreamClass gives no status for payment {listed.id} of invoice {invoice.id}"
        )
    status = STATUSES.get(listed.status)
    if status is None:
        raise PermanentError(f"DreamClass payment status {listed.status} is not a known one")
    details: dict[str, Any] = {
        "event_type": event_type,
        "tenant": tenant,
        "invoice_id": invoice.id,
        "status_code": listed.status,
        "payment_method": {
            "id": method_id,
            "name": None if method is None else method.label,
            "log_only": None if method is None else method.log_only,
        },
    }
    if listed.created_at is not None:
        details["created_at"] = listed.created_at.isoformat()
    if invoice.invoice_number:
        details["invoice_number"] = invoice.invoice_number
    # The notes are free text typed by school staff and may name people: never stored.
    return PaymentState(
        status=status,
        amount=listed.amount,
        currency=listed.currency or invoice.currency,
        details=details,
        # The API gives no time of a payment's last change: the ledger's own order of applying
        # (each event records what the API shows at that moment) is the order.
        version=None,
    )
