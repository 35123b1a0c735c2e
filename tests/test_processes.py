"""Several processes per host, as real processes: `hookpipe worker --processes 2`, two workers
started by hand, and `hookpipe ingress --processes 2` on one port; one scrape counts them all,
and SIGTERM to the parent stops every child."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from hookpipe.ingress.spool import SUFFIX, adopt, shared_out
from hookpipe.settings import Settings
from tests.conftest import queue_depth
from tests.ingress_support import fresh_jodo
from tests.test_supervisor import alive
from tests.test_worker_signals import jodo_events, publish_all
from tests.worker_support import HookpipeProcess, free_port, wait_until

Channel = aio_pika.abc.AbstractChannel
_SAMPLE = re.compile(r'^(\w+)\{pid="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., HookpipeProcess]]:
    """Makes `hookpipe` processes; any still running after the test is killed, its children
    too (they are in process groups of their own)."""
    made: list[HookpipeProcess] = []

    def make(settings: Settings, *args: str) -> HookpipeProcess:
        process = HookpipeProcess(settings, tmp_path / f"process-{len(made)}.log", *args)
        made.append(process)
        return process

    try:
        yield make
    finally:
        for process in made:
            children = [line["pid"] for line in process.logged("started")]
            await process.ensure_gone()
            for pid in children:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def answers(url: str) -> bool:
    try:
        status, _ = await get(url)
    except aiohttp.ClientError:
        return False
    return status == 200


def per_pid(scrape: str, name: str) -> dict[int, float]:
    """The samples of a per-process gauge, by pid."""
    return {int(pid): float(v) for n, pid, v in _SAMPLE.findall(scrape) if n == name}


def total(scrape: str, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(scrape))


async def handled_by_pid(port: int, at_least: int) -> dict[int, float]:
    """Once the workers behind `port` have handled `at_least` messages: how many each did."""
    handled: dict[int, float] = {}

    async def enough() -> bool:
        nonlocal handled
        _, scrape = await get(f"http://127.0.0.1:{port}/metrics")
        handled = per_pid(scrape, "hookpipe_worker_process_handled")
        return sum(handled.values()) >= at_least

    await wait_until(enough, within=30, interval=0.2, what=f"{at_least} messages handled")
    return handled


async def test_worker_processes_both_consume_and_one_scrape_counts_both(
    broker: Channel,
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}", worker_metrics_port=port
    )
    parent = spawn(settings, "worker", "--provider", "jodo", "--processes", "2")
    await parent.start()
    await wait_until(
        lambda: answers(f"http://127.0.0.1:{port}/readyz"), within=30, what="both children ready"
    )
    _, ready = await get(f"http://127.0.0.1:{port}/readyz")
    assert '"worker-1":"consuming"' in ready and '"worker-2":"consuming"' in ready
    children = {line["pid"] for line in parent.logged("started")}
    assert len(children) == 2

    await publish_all(broker, jodo_events(300))
    handled = await handled_by_pid(port, 300)
    assert set(handled) == children
    assert all(count > 0 for count in handled.values()), handled
    _, scrape = await get(f"http://127.0.0.1:{port}/metrics")
    assert total(scrape, "hookpipe_worker_processed_total") == 300

    parent.signal(signal.SIGTERM)
    assert await parent.exit_code(within=settings.shutdown_grace + 10) == 0
    assert not any(alive(pid) for pid in children)
    assert [line["exit_code"] for line in parent.logged("stopped")] == [0, 0]


async def test_a_child_exiting_with_a_setup_error_stops_the_parent_with_code_2(
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
) -> None:
    # A ledger in a directory that cannot be made: each child exits 2, which no restart fixes.
    (tmp_path / "file").write_text("")
    settings = make_settings(ledger_url=f"sqlite:///{tmp_path / 'file' / 'ledger.sqlite3'}")
    parent = spawn(settings, "worker", "--processes", "2")
    await parent.start()
    assert await parent.exit_code(within=30) == 2
    assert parent.logged("a child cannot start and a restart will not fix it; stopping")


async def test_two_workers_by_hand_sharing_a_metrics_directory_share_one_endpoint(
    broker: Channel,
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        worker_metrics_port=port,
        metrics_dir=str(tmp_path / "metrics"),
    )
    first, second = spawn(settings, "worker"), spawn(settings, "worker")
    await first.start()
    await wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), within=30)
    await second.start()
    await wait_until(lambda: bool(second.logged("worker started")), within=30)
    [started] = second.logged("worker started")
    assert started["metrics_port"] is None  # the first one serves its counts
    assert first.process is not None and second.process is not None
    pids = {first.process.pid, second.process.pid}

    await publish_all(broker, jodo_events(300))
    handled = await handled_by_pid(port, 300)
    assert set(handled) == pids
    assert all(count > 0 for count in handled.values()), handled

    # The first one goes: the second takes the port over, and the counts stay.
    first.signal(signal.SIGTERM)
    assert await first.exit_code(within=settings.shutdown_grace + 5) == 0
    await wait_until(lambda: bool(second.logged(f"took the metrics port {port} over")), within=15)
    _, scrape = await get(f"http://127.0.0.1:{port}/metrics")
    assert set(per_pid(scrape, "hookpipe_worker_consuming")) == {second.process.pid}
    assert total(scrape, "hookpipe_worker_processed_total") == 300
    second.signal(signal.SIGTERM)
    assert await second.exit_code(within=settings.shutdown_grace + 5) == 0


async def test_a_second_worker_by_hand_takes_the_next_free_metrics_port(
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}", worker_metrics_port=port
    )
    first, second = spawn(settings, "worker"), spawn(settings, "worker")
    await first.start()
    await wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), within=30)
    await second.start()
    await wait_until(lambda: bool(second.logged("worker started")), within=30)
    [started] = second.logged("worker started")
    assert port < started["metrics_port"] < port + 10
    assert await answers(f"http://127.0.0.1:{started['metrics_port']}/healthz")
    await wait_until(lambda: answers(f"http://127.0.0.1:{started['metrics_port']}/readyz"))
    for process in (first, second):
        process.signal(signal.SIGTERM)
        assert await process.exit_code(within=settings.shutdown_grace + 5) == 0


async def test_worker_readyz_is_503_while_the_broker_cannot_be_reached(
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        worker_metrics_port=port,
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    )
    parent = spawn(settings, "worker", "--processes", "2")
    await parent.start()
    await wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), within=30)
    status, body = await get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503, body
    parent.signal(signal.SIGTERM)
    assert await parent.exit_code(within=settings.shutdown_grace + 10) == 0


async def test_ingress_processes_share_the_port_spool_apart_and_count_together(
    make_settings: Callable[..., Settings],
    spawn: Callable[..., HookpipeProcess],
    tmp_path: Path,
    broker: Channel,
) -> None:
    """No broker: every webhook goes to the spool of the child that answered it, so the spool
    directories show that both answered; a later single ingress publishes them all."""
    port, spool = free_port(), tmp_path / "spool"
    down = make_settings(
        spool_dir=str(spool), amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    )
    parent = spawn(down, "ingress", "--host", "127.0.0.1", "--port", str(port), "--processes", "2")
    await parent.start()
    url = f"http://127.0.0.1:{port}"
    await wait_until(lambda: answers(f"{url}/healthz"), within=30)
    await asyncio.sleep(1)  # both children listening
    count = 60
    # A connection per webhook: SO_REUSEPORT spreads connections, not requests.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            body, headers = fresh_jodo()
            async with session.post(f"{url}/webhooks/jodo", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
    for _ in range(4):  # whichever child answers the scrape counts every child's requests
        await wait_until(lambda: _scraped_requests(url, count), within=5)
    spooled = {d.name: len(list(d.glob(f"*{SUFFIX}"))) for d in (spool / "0", spool / "1")}
    assert all(spooled.values()), spooled

    parent.signal(signal.SIGTERM)
    assert await parent.exit_code(within=down.shutdown_grace + 10) == 0
    assert not any(alive(line["pid"]) for line in parent.logged("started"))

    # One process, the broker back: it takes the children's spools in and publishes them.
    single = spawn(make_settings(spool_dir=str(spool)), "ingress", "--port", str(free_port()))
    await single.start()
    depth = 0

    async def all_published() -> bool:
        nonlocal depth
        depth = await queue_depth(broker, "jodo.order.payment.debited")
        return depth >= count

    await wait_until(all_published, within=30, interval=0.2, what="the spools published")
    assert depth == count
    single.signal(signal.SIGTERM)
    assert await single.exit_code(within=15) == 0


async def _scraped_requests(url: str, count: int) -> bool:
    _, scrape = await get(f"{url}/metrics")
    return (
        'hookpipe_ingress_requests_total{provider="jodo",status="200"} ' + (f"{float(count)}")
        in scrape
    )


def test_spool_segments_of_a_single_ingress_go_to_the_first_child(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / f"{1:016d}{SUFFIX}").write_bytes(b"top")
    (spool / "3").mkdir()
    (spool / "3" / f"{1:016d}{SUFFIX}").write_bytes(b"from 3")
    (spool / "1").mkdir()
    (spool / "1" / f"{7:016d}{SUFFIX}").write_bytes(b"own")
    with shared_out(spool, 2) as targets:
        assert targets == [spool / "0", spool / "1"]
        assert not list(spool.glob(f"*{SUFFIX}"))
        assert [p.read_bytes() for p in sorted((spool / "0").glob(f"*{SUFFIX}"))] == [b"top"]
        # 3 mod 2 = 1, after its own.
        assert [p.read_bytes() for p in sorted((spool / "1").glob(f"*{SUFFIX}"))] == [
            b"own",
            b"from 3",
        ]


def test_a_spool_directory_held_by_a_parent_is_refused_to_a_single_ingress(
    tmp_path: Path,
) -> None:
    from hookpipe.errors import SetupError
    from hookpipe.ingress.spool import Spool

    with shared_out(tmp_path, 2), pytest.raises(SetupError, match="in use"):
        Spool(tmp_path, 1 << 20).open()
    assert adopt(tmp_path / "0", tmp_path) == 0
