"""The whole pipeline in one process: each seed example POSTed to the real ingress, through its
RabbitMQ queue, taken by the real worker with the real handlers, ends as one ledger row, on
SQLite and on PostgreSQL. The provider's retry of the same webhook changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import aio_pika
import orjson
import pytest

from hookpipe import topology
from hookpipe.settings import Settings
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.ledger import Ledger, Payment
from hookpipe.workers.runtime import Worker
from tests.conftest import fixture_bytes, queue_depth
from tests.dreamclass_fake import FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture
from tests.ingress_support import Ingress, StartIngress, dreamclass_body, signed
from tests.worker_support import wait_until

pytest_plugins = ("tests.ingress_fixtures",)

Channel = aio_pika.abc.AbstractChannel

# provider -> (seed fixture, the payment it is about, what the ledger must hold of it)
EXPECTED: dict[str, tuple[str, str, tuple[str, Decimal, str]]] = {
    "jodo": (
        "jodo.order.payment.debited.json",
        "order_12343532424",
        ("paid", Decimal("10000"), "INR"),
    ),
    "dreamclass": ("dreamclass.PAYMENT_CREATED.json", "5", ("paid", Decimal("300.00"), "EUR")),
    "rapyd": (
        "rapyd.INVOICE_PAYMENT_CREATED.json",
        "payment_93bdf7d314a246a3b41024890c15c33d",
        ("paid", Decimal("800"), "MXN"),
    ),
    "flexprice": (
        "flexprice.payment.created.json",
        "pay_01JPB3N5W2X9QF7R4T",
        ("pending", Decimal("149.99"), "USD"),
    ),
}


QUEUES = {
    "jodo": "jodo.order.payment.debited",
    "dreamclass": "dreamclass.PAYMENT_CREATED",
    "rapyd": "rapyd.INVOICE_PAYMENT_CREATED",
    "flexprice": "flexprice.payment.created",
}


@dataclass(frozen=True)
class Pipeline:
    ingress: Ingress
    worker: Worker
    ledger: Ledger
    settings: Settings

    def processed(self, queue: str) -> float:
        """Messages of `queue` the worker has finished with successfully."""
        sample = self.worker.metrics.registry.get_sample_value(
            "hookpipe_worker_processed_total", {"queue": queue}
        )
        return sample or 0.0

    def failed(self, queue: str) -> float:
        """Messages of `queue` the worker has dead-lettered or scheduled for a retry."""
        # Whatever the other labels (a dead letter's reason): every sample of this queue.
        return sum(
            sample.value
            for family in self.worker.metrics.registry.collect()
            if family.name in ("hookpipe_worker_retried", "hookpipe_worker_dead_lettered")
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("queue") == queue
        )


@pytest.fixture
async def pipeline(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    ledger_url: str,
    dreamclass_fake: FakeDreamClass,
) -> AsyncIterator[Pipeline]:
    """An ingress and a worker on every handled queue, sharing a fresh ledger."""
    dreamclass_fake.add_payment(16, 5, amount="300.00", status=1)
    # The ingress's replay guard off: a repeated webhook reaches the workers, whose
    # deduplication is what these tests check.
    settings = dreamclass_fake.settings(make_settings(ledger_url=ledger_url, replay_memory=0))
    ingress = await start_ingress(settings)
    async with open_handlers(settings) as handlers, Worker(settings, handlers) as worker:
        ledger = await Ledger.open(ledger_url)
        try:
            yield Pipeline(ingress, worker, ledger, settings)
        finally:
            await ledger.close()


async def _payment(ledger: Ledger, provider: str, payment_id: str) -> Payment:
    found: list[Payment] = []

    async def recorded() -> bool:
        payment = await ledger.get(provider, payment_id)
        if payment is not None:
            found[:] = [payment]
        return payment is not None

    await wait_until(recorded, what=f"{provider} {payment_id} in the ledger")
    return found[0]


@pytest.mark.parametrize("provider", list(EXPECTED))
async def test_a_seed_webhook_becomes_one_ledger_row_and_its_retry_changes_nothing(
    pipeline: Pipeline, broker: Channel, provider: str
) -> None:
    seed, payment_id, (status, amount, currency) = EXPECTED[provider]
    body, headers = signed(provider, None if provider == "dreamclass" else fixture_bytes(seed))
    queue = QUEUES[provider]

    first = await pipeline.ingress.post(provider, body, headers)
    assert first.status == 200, await first.text()
    payment = await _payment(pipeline.ledger, provider, payment_id)
    assert (payment.status, payment.amount, payment.currency) == (status, amount, currency)
    assert len(payment.events) == 1

    # The provider did not see the 200 and sends the same webhook again.
    again = await pipeline.ingress.post(provider, body, headers)
    assert again.status == 200
    await wait_until(lambda: pipeline.processed(queue) == 2, what="the retry handled")
    assert await pipeline.ledger.get(provider, payment_id) == payment
    assert await queue_depth(broker, topology.dlq_name(queue)) == 0


async def test_the_jodo_cancellation_seed_reverses_the_direct_payment(pipeline: Pipeline) -> None:
    body, headers = signed("jodo", fixture_bytes("jodo.direct.payment.cancelled.json"))

    response = await pipeline.ingress.post("jodo", body, headers)

    assert response.status == 200, await response.text()
    payment = await _payment(pipeline.ledger, "jodo", "direct_3257")
    assert payment.status == "reversed"
    assert payment.amount == Decimal("5000.00")
    assert payment.events == ("9c7ae52e-dad6-4dff-948e-cdfc2926cf7b",)


async def test_a_forged_dreamclass_deletion_does_not_stick(
    pipeline: Pipeline, start_ingress: StartIngress, broker: Channel
) -> None:
    # An ingress with its replay guard on, as in production.
    ingress = await start_ingress(dataclasses.replace(pipeline.settings, replay_memory=1000))
    genuine = dreamclass_body()
    # Whoever holds the genuine webhook re-types it as a deletion: DreamClass signs the id only.
    document = orjson.loads(genuine)
    document["type"] = "PAYMENT_DELETED"
    document["timestamp"] = 9_999_999_999_999
    del document["data"]["invoiceId"]
    forged = orjson.dumps(document)

    assert (await ingress.post("dreamclass", forged)).status == 200
    await wait_until(
        lambda: pipeline.failed("dreamclass.PAYMENT_DELETED") == 1, what="the forgery refused"
    )
    assert (await ingress.post("dreamclass", genuine)).status == 200

    payment = await _payment(pipeline.ledger, "dreamclass", "5")
    assert (payment.status, payment.amount, payment.version) == ("paid", Decimal("300.00"), None)
    # The forgery could not be confirmed with the API: dead-lettered, never applied.
    dlq = topology.dlq_name("dreamclass.PAYMENT_DELETED")
    await wait_until(lambda: _depth(broker, dlq, 1), what="the forgery dead-lettered")
    assert payment.events == ("214fb720-2248-44e0-9bfd-72171f9e72de:PAYMENT_CREATED",)


async def _depth(broker: Channel, queue: str, expected: int) -> bool:
    return await queue_depth(broker, queue) == expected
