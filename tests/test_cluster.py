"""A real 3-node RabbitMQ cluster: the node the ingress and the worker are connected to is lost
under steady load, killed (kill -9) or stopped gracefully. Nothing the ingress answered 200 for is
lost, nothing is applied twice, the 503s last no longer than a reconnect and the worker consumes
again as soon.

Each test declares the topology in a vhost of its own through the node it then loses, so that
node leads every quorum queue: the case where RabbitMQ 3.10 kept refusing the publishes of a
channel restored on another node (see hookpipe.broker._RenewedOnNackChannel), which a run met
only when the chosen node happened to be the leaders'. `-s` prints a line of figures per test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hookpipe.settings import Settings
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.handlers.base import Delivery, Handler
from hookpipe.workers.ledger import Ledger
from hookpipe.workers.runtime import Worker
from tests.cluster import Node, add_vhost, kill, stop
from tests.cluster import cluster as cluster  # the session's nodes
from tests.cluster import healthy_cluster as healthy_cluster  # the fixture
from tests.ingress_support import Ingress, StartIngress, fresh_jodo
from tests.worker_support import wait_until

pytest_plugins = ("tests.ingress_fixtures",)

# One xdist worker runs both, on one cluster: three more RabbitMQ nodes per worker would not fit
# beside the rest of the suite on two cores.
pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("cluster")]

RATE = 25  # webhooks a second
SECONDS = 10
OUTAGE_AFTER = 3.0
MAX_OUTAGE = 5.0  # seconds of 503s, and until the worker consumes again, after the loss


@dataclass
class Run:
    """What a provider and the worker saw: each 503's time, each event's 200 and handling."""

    unavailable: list[float] = field(default_factory=list)
    accepted: dict[str, float] = field(default_factory=dict)  # event id -> time of its 200
    handled: dict[str, float] = field(default_factory=dict)  # event id -> first handling
    ingress_lost: list[float] = field(default_factory=list)  # its connection's losses
    worker_lost: list[float] = field(default_factory=list)

    def watch(self, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
        """The handlers, noting when each event is first handled."""

        def watched(handler: Handler) -> Handler:
            async def handle(delivery: Delivery) -> None:
                self.handled.setdefault(delivery.event_id, time.monotonic())
                await handler(delivery)

            return handle

        return {queue: watched(handler) for queue, handler in handlers.items()}

    def summary(self, what: str, lost_at: float, webhooks: int) -> str:
        """One line of figures: webhooks, 503s and their span, the worker's pause."""
        ingress_down = self.ingress_lost[0] - lost_at if self.ingress_lost else float("nan")
        worker_down = self.worker_lost[0] - lost_at if self.worker_lost else float("nan")
        return (
            f"{what}: {webhooks} webhooks; the ingress's connection lost {ingress_down:.2f} s "
            f"after, then {len(self.unavailable)} answered 503 for {self.unavailable_for():.2f} s; "
            f"the worker's lost {worker_down:.2f} s after, consuming again "
            f"{self.resumed():.2f} s later"
        )

    def unavailable_for(self) -> float:
        """Seconds from the ingress's loss of its connection (or an earlier 503) until its last
        503; 0 without any."""
        if not self.unavailable:
            return 0.0
        # A graceful stop takes seconds before it closes the connections: the outage starts
        # then (or at an earlier 503), not at the command.
        return max(self.unavailable) - min(self.ingress_lost[:1] + self.unavailable)

    def resumed(self) -> float:
        """Seconds from the worker's loss of its connection until it handled an event accepted
        after that: one it could only have got from a consumer on another node."""
        if not self.worker_lost:
            return float("inf")
        lost = self.worker_lost[0]
        later = [self.handled[e] for e, t in self.accepted.items() if t > lost]
        return min(later) - lost if later else float("inf")


async def _deliver(ingress: Ingress, n: int, run: Run) -> str:
    """POST like a provider: again after each 503 until a 200; the payment it is about."""
    order, event_id = f"order_cluster_{n}", str(uuid.uuid4())
    body, headers = fresh_jodo(event_id=event_id, order_id=order)
    while True:
        response = await ingress.post("jodo", body, headers)
        if response.status == 200:
            run.accepted[event_id] = time.monotonic()
            return order
        assert response.status == 503, response.status
        run.unavailable.append(time.monotonic())
        await asyncio.sleep(0.2)


async def _lose_under_load(
    what: str,
    lose: Callable[[Node], None],
    nodes: list[Node],
    victim: Node,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vhost = add_vhost(victim)
    others = [node for node in nodes if node is not victim]
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    settings = make_settings(
        amqp_url=",".join(node.url_for(vhost) for node in [victim, *others]),
        ledger_url=ledger_url,
        reconnect_interval=0.5,
        replay_memory=0,
        worker_metrics_port=0,
    )
    # The nodes in the order listed, not shuffled: the ingress and the worker both connect to
    # the victim, and the ingress declares the topology there.
    monkeypatch.setattr("hookpipe.broker.random.shuffle", lambda nodes: None)
    ingress = await start_ingress(settings)
    run = Run()
    connection = ingress.publisher._connection
    assert connection is not None
    assert connection.url.port == victim.port  # type: ignore[attr-defined]
    connection.close_callbacks.add(lambda *_: run.ingress_lost.append(time.monotonic()))

    async with (
        open_handlers(settings) as handlers,
        Worker(settings, run.watch(handlers)) as worker,
    ):
        assert worker._connection is not None
        assert worker._connection.url.port == victim.port  # type: ignore[attr-defined]
        worker._connection.close_callbacks.add(lambda *_: run.worker_lost.append(time.monotonic()))
        started = time.monotonic()
        deliveries = []
        losing: asyncio.Task[None] | None = None
        lost_at = 0.0
        for n in range(RATE * SECONDS):
            deliveries.append(asyncio.create_task(_deliver(ingress, n, run)))
            if losing is None and time.monotonic() - started >= OUTAGE_AFTER:
                lost_at = time.monotonic()
                losing = asyncio.create_task(asyncio.to_thread(lose, victim))
            await asyncio.sleep(1 / RATE)
        assert losing is not None
        await losing
        orders = await asyncio.gather(*deliveries)

        ledger = await Ledger.open(ledger_url)
        try:

            async def all_applied() -> bool:
                return len(await ledger.list(provider="jodo")) == len(orders)

            await wait_until(all_applied, within=60, what="every accepted webhook applied")
            payments = await ledger.list(provider="jodo")
        finally:
            await ledger.close()

    summary = run.summary(what, lost_at, len(orders))
    print(f"\n{summary}")
    assert sorted(p.payment_id for p in payments) == sorted(orders), f"lost some: {summary}"
    assert all(len(p.events) == 1 for p in payments), f"applied some twice: {summary}"
    assert run.unavailable_for() <= MAX_OUTAGE, summary
    assert run.resumed() <= MAX_OUTAGE, summary


async def test_killing_the_connected_node_loses_nothing_and_applies_nothing_twice(
    healthy_cluster: list[Node],
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _lose_under_load(
        "kill -9",
        kill,
        healthy_cluster,
        healthy_cluster[0],
        start_ingress,
        make_settings,
        tmp_path,
        monkeypatch,
    )


async def test_stopping_the_connected_node_loses_nothing_and_applies_nothing_twice(
    healthy_cluster: list[Node],
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _lose_under_load(
        "rabbitmqctl stop",
        stop,
        healthy_cluster,
        healthy_cluster[1],
        start_ingress,
        make_settings,
        tmp_path,
        monkeypatch,
    )
