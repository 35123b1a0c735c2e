"""The outage spool: with no broker to take them, webhooks are kept on disk and answered 200, then
published once the broker is back, in order, each once; what a killed ingress spooled is
published by the next one. A TCP proxy between hookpipe and RabbitMQ plays the outage."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from yarl import URL

from hookpipe.errors import SetupError
from hookpipe.ingress.app import SPOOL
from hookpipe.ingress.spool import SUFFIX, Spool, Spooled, frame
from hookpipe.settings import Settings
from hookpipe.workers.handlers import open_handlers
from hookpipe.workers.ledger import Ledger
from hookpipe.workers.runtime import Worker
from tests import tcp_proxy
from tests.conftest import queue_depth
from tests.ingress_support import SEEDS, Ingress, StartIngress, fresh_jodo
from tests.tcp_proxy import TcpProxy
from tests.worker_support import HookpipeProcess, free_port, wait_until

pytest_plugins = ("tests.ingress_fixtures",)

amqp_proxy = tcp_proxy.amqp_proxy
Channel = aio_pika.abc.AbstractChannel
QUEUE = SEEDS["jodo"][1]
FOUND_EARLIER = (
    "spool holds webhooks from an earlier run; publishing them once the broker takes them"
)


def _record(n: int, body: bytes = b'{"n": 1}') -> Spooled:
    return Spooled(1_700_000_000_000 + n, "jodo", f"evt-{n}", QUEUE, f"req-{n}", body)


def _through(proxy: TcpProxy, settings: Settings) -> Settings:
    """These settings with the broker reached through `proxy`, reconnecting every 0.1 s."""
    url = URL(proxy.url_for(settings.amqp_url)).update_query(reconnect_interval="0.1")
    return dataclasses.replace(settings, amqp_url=str(url))


async def _spooling_ingress(
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    proxy: TcpProxy,
    spool_dir: Path,
    **changes: object,
) -> Ingress:
    settings = _through(proxy, make_settings(spool_dir=str(spool_dir), **changes))
    return await start_ingress(settings)


async def _take_ids(broker: Channel, expected: int) -> list[str]:
    """The message ids of the first `expected` messages of the Jodo queue, in queue order."""
    await wait_until(
        lambda: _depth_at_least(broker, expected), within=30, what=f"{expected} messages queued"
    )
    queue = await broker.get_queue(QUEUE, ensure=False)
    ids = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        ids.append(str(message.message_id))
    return ids


def _segments(spool_dir: Path) -> list[Path]:
    return list(spool_dir.glob(f"*{SUFFIX}"))


async def _depth_at_least(broker: Channel, count: int) -> bool:
    return await queue_depth(broker, QUEUE) >= count


def test_a_torn_record_at_a_segments_end_is_dropped_and_the_whole_ones_kept(
    tmp_path: Path,
) -> None:
    whole = b"".join(frame(_record(n)) for n in range(3))
    (tmp_path / f"{1:016d}{SUFFIX}").write_bytes(whole + frame(_record(3))[:-5])
    spool = Spool(tmp_path, 1_000_000)
    spool.open()
    try:
        assert spool.depth == 3
        assert spool.size == len(whole)
        assert (tmp_path / f"{1:016d}{SUFFIX}").stat().st_size == len(whole)
        assert spool.oldest_age(1_700_000_010_000) == 10.0
    finally:
        asyncio.run(spool.close())


def test_a_second_process_cannot_take_a_spool_directory_in_use(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1_000_000)
    first.open()
    try:
        with pytest.raises(SetupError, match="in use by another ingress process"):
            Spool(tmp_path, 1_000_000).open()
    finally:
        asyncio.run(first.close())


async def test_webhooks_accepted_in_an_outage_are_published_in_order_when_the_broker_returns(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    ingress = await _spooling_ingress(start_ingress, make_settings, amqp_proxy, tmp_path)
    spool = ingress.app[SPOOL]
    await amqp_proxy.cut()
    await wait_until(lambda: not ingress.publisher.ready, what="the ingress to notice the cut")

    sent = []
    for _ in range(20):
        event_id = str(uuid.uuid4())
        response = await ingress.post("jodo", *fresh_jodo(event_id))
        assert response.status == 200, await response.text()
        sent.append(f"jodo:{event_id}")
    assert spool.depth == 20
    ready = await ingress.client.get("/readyz")
    assert (ready.status, await ready.json()) == (
        200,
        {"status": "degraded", "broker": "unavailable", "spooled": 20},
    )
    metrics = await (await ingress.client.get("/metrics")).text()
    assert "hookpipe_ingress_spool_depth 20.0" in metrics
    assert "hookpipe_ingress_spooled_total 20.0" in metrics
    assert await queue_depth(broker, QUEUE) == 0

    amqp_proxy.restore()
    await wait_until(lambda: spool.depth == 0, what="the spool drained")
    assert await _take_ids(broker, 20) == sent
    assert not _segments(tmp_path)
    ready = await ingress.client.get("/readyz")
    assert await ready.json() == {"status": "ready"}
    metrics = await (await ingress.client.get("/metrics")).text()
    assert "hookpipe_ingress_spool_drained_total 20.0" in metrics


async def test_a_broker_that_does_not_confirm_in_time_sends_the_webhook_to_the_spool(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    ingress = await _spooling_ingress(
        start_ingress, make_settings, amqp_proxy, tmp_path, publish_timeout=0.5
    )
    amqp_proxy.freeze()
    event_id = str(uuid.uuid4())
    started = time.monotonic()
    response = await ingress.post("jodo", *fresh_jodo(event_id))
    assert response.status == 200
    assert 0.5 <= time.monotonic() - started < 2.0
    assert ingress.app[SPOOL].depth == 1

    amqp_proxy.thaw()
    await wait_until(lambda: ingress.app[SPOOL].depth == 0, what="the spool drained")
    # The unconfirmed publish may have reached the queue as well: the workers deduplicate.
    assert set(await _take_ids(broker, 1)) == {f"jodo:{event_id}"}


async def test_a_full_spool_answers_503_and_keeps_what_it_took(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    size = len(frame(_record(0, fresh_jodo()[0])))
    ingress = await _spooling_ingress(
        start_ingress, make_settings, amqp_proxy, tmp_path, spool_max_bytes=int(3.5 * size)
    )
    await amqp_proxy.cut()
    await wait_until(lambda: not ingress.publisher.ready, what="the ingress to notice the cut")
    statuses = []
    for _ in range(5):
        response = await ingress.post("jodo", *fresh_jodo())
        statuses.append(response.status)
    assert statuses == [200, 200, 200, 503, 503]
    assert (await ingress.client.get("/readyz")).status == 503

    amqp_proxy.restore()
    await wait_until(lambda: ingress.app[SPOOL].depth == 0, what="the spool drained")
    assert len(await _take_ids(broker, 3)) == 3


async def _post_at(
    url: str, rate: float, seconds: float, during: Callable[[float], None]
) -> tuple[list[int], list[str]]:
    """POST fresh Jodo webhooks, each about its own payment, at `rate` a second for `seconds`,
    calling `during(elapsed)` between them; every status, and the payments."""
    statuses: list[int] = []
    orders: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def post(order: str) -> None:
            body, headers = fresh_jodo(order_id=order)
            headers = {"Content-Type": "application/json", **headers}
            async with session.post(url, data=body, headers=headers) as response:
                statuses.append(response.status)

        started = time.monotonic()
        posts = []
        n = 0
        while (elapsed := time.monotonic() - started) < seconds:
            during(elapsed)
            order = f"order_spool_{uuid.uuid4().hex[:12]}"
            orders.append(order)
            posts.append(asyncio.create_task(post(order)))
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.gather(*posts)
    return statuses, orders


# 40 s of load and the drain of its 4,000 webhooks: more than the suite's 120 s on a busy machine.
@pytest.mark.timeout(360)
async def test_a_30_second_outage_at_100_webhooks_a_second_answers_no_503_and_applies_each_once(
    broker: Channel,
    start_ingress: StartIngress,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    settings = _through(
        amqp_proxy,
        make_settings(spool_dir=str(tmp_path / "spool"), ledger_url=ledger_url, replay_memory=0),
    )
    ingress = await start_ingress(settings)
    phases = {"cut": 5.0, "restored": 35.0}
    done: set[str] = set()
    cutting: list[asyncio.Task[None]] = []
    posted_in_outage = 0

    def during(elapsed: float) -> None:
        nonlocal posted_in_outage
        posted_in_outage += "cut" in done and "restored" not in done
        # The whole broker goes away for 30 s, for the ingress and the worker alike.
        if elapsed >= phases["cut"] and "cut" not in done:
            done.add("cut")
            cutting.append(asyncio.create_task(amqp_proxy.cut()))
        if elapsed >= phases["restored"] and "restored" not in done:
            done.add("restored")
            amqp_proxy.restore()

    async with open_handlers(settings) as handlers, Worker(settings, handlers):
        url = str(ingress.client.make_url("/webhooks/jodo"))
        statuses, orders = await _post_at(url, 100, 40.0, during)
        assert done == {"cut", "restored"}
        assert statuses.count(200) == len(orders), {s: statuses.count(s) for s in set(statuses)}
        # Every webhook of the outage went to disk (the load generator keeps about 100/s, less
        # on a busy machine: what it sent is what counts).
        assert posted_in_outage >= 2000
        assert ingress.app[SPOOL].spooled_total >= posted_in_outage

        ledger = await Ledger.open(ledger_url)
        try:

            async def all_applied() -> bool:
                return len(await ledger.list(provider="jodo", limit=10_000)) >= len(orders)

            # 4,000 webhooks through one in-process worker: a busy machine takes minutes.
            await wait_until(all_applied, within=240, interval=0.5, what="every webhook applied")
            payments = await ledger.list(provider="jodo", limit=10_000)
        finally:
            await ledger.close()
    assert sorted(p.payment_id for p in payments) == sorted(orders)  # none lost
    assert all(len(p.events) == 1 for p in payments)  # none applied twice


async def test_what_a_killed_ingress_spooled_is_published_by_the_next_one(
    broker: Channel,
    make_settings: Callable[..., Settings],
    amqp_proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    settings = _through(amqp_proxy, make_settings(spool_dir=str(tmp_path / "spool")))
    port = free_port()
    argv = ("ingress", "--host", "127.0.0.1", "--port", str(port))
    first = HookpipeProcess(settings, tmp_path / "first.log", *argv)
    second = HookpipeProcess(settings, tmp_path / "second.log", *argv)
    base = f"http://127.0.0.1:{port}"
    try:
        await amqp_proxy.cut()
        await first.start()
        async with aiohttp.ClientSession() as session:

            async def degraded() -> bool:
                try:
                    async with session.get(f"{base}/readyz") as response:
                        return bool((await response.json())["status"] == "degraded")
                except aiohttp.ClientError:
                    return False

            await wait_until(degraded, what="the ingress up, without its broker")
            sent = []
            for _ in range(100):
                event_id = str(uuid.uuid4())
                body, headers = fresh_jodo(event_id)
                headers = {"Content-Type": "application/json", **headers}
                async with session.post(
                    f"{base}/webhooks/jodo", data=body, headers=headers
                ) as response:
                    assert response.status == 200
                sent.append(f"jodo:{event_id}")

        first.signal(signal.SIGKILL)
        assert await first.exit_code(within=5) == -signal.SIGKILL
        assert await queue_depth(broker, QUEUE) == 0
        amqp_proxy.restore()
        await second.start()
        assert sorted(await _take_ids(broker, 100)) == sorted(sent)
        [found] = second.logged(FOUND_EARLIER)
        assert found["spooled"] == 100
        await wait_until(lambda: not _segments(tmp_path / "spool"), what="the segments deleted")
    finally:
        await first.ensure_gone()
        await second.ensure_gone()
