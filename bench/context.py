"""What every phase needs: the run's vhost and databases, its child processes, and the broker.

`Bench` owns every process it starts and stops them all in `close()`, which the entry point
calls on any exit (a normal end, an error, Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from bench import ledger_probe, payloads, resources
from bench.procs import Child, free_port, hookpipe_argv, python_argv
from bench.resources import Databases
from hookpipe import constants as c
from hookpipe import topology
from hookpipe.ingress.jodo import JodoSettings
from hookpipe.settings import Settings


class Unavailable(Exception):
    """A component the figure needs cannot run (not written yet, or fails to start)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Scale:
    """How much load each phase sends: `full` for the real figures, `quick` for a smoke run."""

    warmup: float  # seconds of load before a throughput or latency window opens
    seconds: float  # length of a throughput window
    latency_seconds: float  # length of a fixed-rate latency window
    worker_events: int  # messages preloaded for a worker throughput run
    e2e_rate: float
    e2e_seconds: float
    memory_warmup: int  # webhooks before the "before" memory reading
    memory_events: int  # webhooks between the two readings
    connections: int = 32  # wrk connections = confirms outstanding in the bare publish loop


FULL = Scale(
    warmup=2.0,
    seconds=8.0,
    latency_seconds=10.0,
    worker_events=20_000,
    e2e_rate=1000.0,
    e2e_seconds=10.0,
    memory_warmup=20_000,
    memory_events=200_000,
)
QUICK = Scale(
    warmup=0.5,
    seconds=1.5,
    latency_seconds=1.5,
    worker_events=600,
    e2e_rate=200.0,
    e2e_seconds=1.5,
    memory_warmup=300,
    memory_events=1_000,
)


class Bench:
    """The run's resources and child processes."""

    def __init__(
        self, vhost: str, amqp_url: str, databases: Databases, workdir: Path, scale: Scale
    ) -> None:
        self.vhost = vhost
        self.amqp_url = amqp_url
        self.databases = databases
        self.workdir = workdir
        self.scale = scale
        self.settings = dataclasses.replace(
            Settings(), amqp_url=amqp_url, sections=(JodoSettings(secrets=(payloads.SECRET,)),)
        )
        self.children: list[Child] = []
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._series = payloads.new_series()
        self._logs = 0
        # Shared between phases: e.g. the ingress's maximum rate sets the latency phase's rate.
        self.results: dict[str, Any] = {}

    # -- broker ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the run's vhost and declare hookpipe's topology there."""
        self._connection = await aio_pika.connect_robust(
            self.amqp_url, client_properties={"connection_name": "bench"}
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        await topology.declare(self._channel, self.settings, force=True)

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "Bench.open() first"
        return self._channel

    async def purge(self, queue: str = payloads.QUEUE) -> None:
        await (await self.channel.get_queue(queue, ensure=False)).purge()

    async def consumers(self, queue: str = payloads.QUEUE) -> int:
        return await asyncio.to_thread(resources.consumers, self.vhost, queue)

    async def preload(self, series: int, count: int) -> None:
        """Publish `count` distinct signed-valid events to the Jodo queue, as the ingress would."""
        exchange = await self.channel.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
        window = asyncio.Semaphore(256)  # confirms outstanding: enough to keep the broker busy

        async def one(index: int) -> None:
            async with window:
                raw = payloads.body(series, index)
                await exchange.publish(
                    payloads.message(raw, payloads.event_id(series, index)),
                    routing_key=payloads.QUEUE,
                    mandatory=True,
                    timeout=30,
                )

        # Each one confirmed, so each one is in the queue.
        await asyncio.gather(*(one(i) for i in range(count)))

    def series(self) -> int:
        """A new event id series: no two phases ever send the same event."""
        self._series += 1
        return self._series

    # -- processes --------------------------------------------------------------------------

    def env(self, ledger_url: str | None = None) -> dict[str, str]:
        """The environment of a hookpipe process of this run: its vhost, its secret, JSON logs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPIPE_")}
        env.update(
            HOOKPIPE_AMQP_URL=self.amqp_url,
            HOOKPIPE_JODO_SECRET=payloads.SECRET,
            HOOKPIPE_LOG_FORMAT="json",
            HOOKPIPE_LOG_LEVEL="info",
            HOOKPIPE_WORKER_METRICS_PORT="0",
            # Each process a spool directory of its own, in this run's folder.
            HOOKPIPE_SPOOL_DIR=str(self.workdir / "spool" / uuid.uuid4().hex[:12]),
        )
        if ledger_url is not None:
            env["HOOKPIPE_LEDGER_URL"] = ledger_url
        return env

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Child:
        self._logs += 1
        log = self.workdir / f"{self._logs:02d}-{name}.log"
        child = Child(name, argv, env or self.env(), log)
        self.children.append(child)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    async def start_http(
        self, name: str, argv: list[str], port: int, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start an HTTP server and wait until GET /readyz answers 200."""
        child = self.start(name, argv, env)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                if not child.alive():
                    self.stop(child)
                    raise Unavailable(f"{name} exited at start:\n{child.log_tail()}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                        if answer.status == 200:
                            return child
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    self.stop(child)
                    raise Unavailable(f"{name} not ready within 30 s:\n{child.log_tail()}")
                await asyncio.sleep(0.1)

    async def start_ingress(self, processes: int = 1) -> tuple[Child, int]:
        """`hookpipe ingress` on a free port of 127.0.0.1: one process, or a parent and
        `processes` children sharing the port."""
        port = free_port()
        argv = hookpipe_argv("ingress", "--host", "127.0.0.1", "--port", str(port))
        if processes > 1:
            argv += ["--processes", str(processes)]
        name = "ingress" if processes == 1 else f"ingress-{processes}p"
        return await self.start_http(name, argv, port), port

    async def start_bare_http(self, publish: bool = False) -> tuple[Child, int]:
        port = free_port()
        argv = python_argv("bench.bare", "http", "--port", str(port))
        if publish:
            argv += ["--publish", self.amqp_url]
        name = "bare-http-publish" if publish else "bare-http"
        return await self.start_http(name, argv, port), port

    async def start_peer(self, confirms: bool) -> tuple[Child, int]:
        """The FastAPI + Celery peer (`bench.peer_app`) on a free port, publishing to this run's
        vhost, with Celery's publisher confirms on or off."""
        port = free_port()
        argv = python_argv("bench.peer_app", "--port", str(port), "--amqp-url", self.amqp_url)
        if confirms:
            argv.append("--confirms")
        name = "peer-celery-confirms" if confirms else "peer-celery"
        return await self.start_http(name, argv, port), port

    async def start_worker(self, ledger_url: str) -> Child:
        """One `hookpipe worker` on the Jodo queue; waits until it consumes."""
        child = self.start(
            "worker", hookpipe_argv("worker", "--queue", payloads.QUEUE), self.env(ledger_url)
        )
        deadline = time.monotonic() + 60
        while True:
            if not child.alive():
                self.stop(child)
                raise Unavailable(f"worker exited at start:\n{child.log_tail()}")
            if await self.consumers() > 0:
                return child
            if time.monotonic() > deadline:
                self.stop(child)
                raise Unavailable(f"worker did not consume within 60 s:\n{child.log_tail()}")
            await asyncio.sleep(0.1)

    async def wait_applied(
        self, ledger_url: str, count: int, watch: list[Child], timeout: float
    ) -> None:
        """Wait until the ledger holds `count` processed events; fail if a watched child dies."""
        deadline = time.monotonic() + timeout
        done = 0
        while True:
            done = await ledger_probe.applied_count(ledger_url)
            if done >= count:
                return
            for child in watch:
                child.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {count} events applied after {timeout:.0f} s")
            await asyncio.sleep(0.25)

    async def run_job(self, name: str, argv: list[str], out: Path, timeout: float) -> Any:
        """Run a child to its end and read the JSON it wrote to `out`."""
        child = self.start(name, argv)
        try:
            code = await child.wait(timeout)
        finally:
            self.stop(child)
        if code != 0 or not out.exists():
            raise RuntimeError(f"{name} failed (exit code {code}):\n{child.log_tail()}")
        return orjson.loads(out.read_bytes())

    async def wait_result(self, child: Child, out: Path, timeout: float) -> Any:
        """Wait for a long-lived child (a bare consumer) to write its result."""
        deadline = time.monotonic() + timeout
        while not out.exists():
            child.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name}: no result after {timeout:.0f} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)  # written in one call, but let it land
        return orjson.loads(out.read_bytes())

    def path(self, name: str) -> Path:
        return self.workdir / name

    async def loadgen(
        self, name: str, port: int, mode: str, series: int, *, timeout: float, **options: Any
    ) -> Any:
        """Run the Python load generator (`bench.loadgen`) in its own process; its result."""
        out = self.path(f"{name}.json")
        argv = python_argv(
            "bench.loadgen", mode, "--port", str(port), "--series", str(series), "--out", str(out)
        )
        for option, value in options.items():
            flag = "--" + option.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is not None and value is not False:
                argv += [flag, str(value)]
        return await self.run_job(name, argv, out, timeout)

    async def close(self) -> None:
        """Stop every child (most recent first) and the broker connection."""
        while self.children:
            self.children.pop().stop()
        if self._connection is not None:
            await self._connection.close()
