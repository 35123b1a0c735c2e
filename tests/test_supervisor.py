"""`hookpipe run` as a real process: ingress and workers up, a webhook reaches the ledger, a dead
child comes back, SIGINT stops everything with exit code 0 and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from hookpipe.settings import Settings
from hookpipe.workers.ledger import Ledger
from tests import signers
from tests.conftest import JODO_SECRET, fixture_bytes
from tests.worker_support import free_port, subprocess_env, wait_until

JODO_ORDER = "order_12343532424"  # the order of the Jodo example


def child_pids(parent: int) -> set[int]:
    """The live processes whose parent is `parent`, from /proc."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        # After the command name: state, then the parent's pid. Zombies are not running.
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def command_line(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Supervisor:
    def __init__(self, process: asyncio.subprocess.Process, out: Path, err: Path) -> None:
        self.process = process
        self.out = out
        self.err = err

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@pytest.fixture
async def start_run(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Supervisor]]]:
    """Starts `hookpipe run`; after the test, kills whatever of it is still running."""
    started: list[Supervisor] = []

    async def start(settings: Settings, *args: str) -> Supervisor:
        out, err = tmp_path / "run.out", tmp_path / "run.err"
        with out.open("wb") as out_file, err.open("wb") as err_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hookpipe.cli",
                "run",
                *args,
                env=subprocess_env(settings),
                stdout=out_file,
                stderr=err_file,
            )
        supervisor = Supervisor(process, out, err)
        started.append(supervisor)
        return supervisor

    try:
        yield start
    finally:
        for supervisor in started:
            leftovers = child_pids(supervisor.process.pid)
            if supervisor.process.returncode is None:
                supervisor.process.kill()
                await supervisor.process.wait()
            for pid in leftovers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


async def test_run_takes_a_webhook_to_the_ledger_and_stops_cleanly_on_sigint(
    broker: object,
    make_settings: Callable[..., Settings],
    start_run: Callable[..., Awaitable[Supervisor]],
    tmp_path: Path,
) -> None:
    port, metrics_port = free_port(), free_port()
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}", worker_metrics_port=metrics_port
    )
    run = await start_run(settings, "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
    await wait_until(lambda: "hookpipe is running" in run.stdout(), within=30, what="the banner")
    banner = run.stdout()
    assert "hookpipe simulate jodo order.payment.debited" in banner
    assert f"--url http://127.0.0.1:{port}/webhooks/jodo" in banner
    assert "set -a; . var/dev.env; set +a" in banner
    assert "payments list" in banner
    body = fixture_bytes("jodo.order.payment.debited.json")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/webhooks/jodo",
            data=body,
            headers={**signers.jodo(body, JODO_SECRET), "Content-Type": "application/json"},
        ) as response:
            assert response.status == 200
        # Each worker serves its metrics on a port of its own.
        for port_n in (metrics_port, metrics_port + 1):
            await wait_until(
                partial(_serves_metrics, session, port_n), what=f"metrics on port {port_n}"
            )
    ledger = await Ledger.open(settings.ledger_url)
    try:
        await wait_until(lambda: _is_paid(ledger), what="the payment in the ledger")
    finally:
        await ledger.close()

    children = child_pids(run.process.pid)
    assert len(children) == 3  # the ingress and two workers
    run.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(run.process.wait(), settings.shutdown_grace + 10) == 0
    assert not [pid for pid in children if alive(pid)]
    assert "Traceback" not in run.stderr()


async def _is_paid(ledger: Ledger) -> bool:
    payment = await ledger.get("jodo", JODO_ORDER)
    return payment is not None and payment.status == "paid"


async def _serves_metrics(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            return response.status == 200 and "hookpipe_worker" in await response.text()
    except aiohttp.ClientError:
        return False


async def test_run_restarts_a_child_that_dies(
    broker: object,
    make_settings: Callable[..., Settings],
    start_run: Callable[..., Awaitable[Supervisor]],
    tmp_path: Path,
) -> None:
    settings = make_settings(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    run = await start_run(settings, "--host", "127.0.0.1", "--port", str(free_port()))
    await wait_until(lambda: "hookpipe is running" in run.stdout(), within=30, what="the banner")
    await wait_until(lambda: len(child_pids(run.process.pid)) == 2, what="two children")
    before = child_pids(run.process.pid)
    [victim] = [pid for pid in before if " worker" in command_line(pid)]
    os.kill(victim, signal.SIGKILL)
    await wait_until(
        lambda: len(child_pids(run.process.pid) - before) == 1, within=15, what="a new child"
    )
    assert victim not in child_pids(run.process.pid)
    assert "restarting it" in run.stderr()
    run.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(run.process.wait(), settings.shutdown_grace + 10) == 0
    assert not child_pids(run.process.pid)
