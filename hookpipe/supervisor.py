"""`hookpipe run`: the development all-in-one.

Declares the topology, then runs `hookpipe ingress` and N `hookpipe worker` child processes,
restarts any that dies (with backoff), and on Ctrl-C / SIGTERM tells each to drain and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from hookpipe import cli_args
from hookpipe.errors import SetupError
from hookpipe.settings import Settings

log = structlog.get_logger()

# Restart backoff: a child that keeps dying (broker down, port taken) is retried ever more
# slowly, up to the cap; one that ran this long before dying counts as healthy again.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_CAP = 30.0
HEALTHY_AFTER = 30.0
# A child's exit code for "a setting or the environment is wrong": not restarted (a bad setting,
# a busy port, a refused broker login or vhost, a ledger that cannot be used as configured).
EXIT_WILL_NOT_HEAL = 2
# Beyond the children's own grace: time for them to close connections and exit.
STOP_MARGIN = 5.0
READY_TIMEOUT = 15.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the ingress listens on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=cli_args.listen_port,
        default=8080,
        help="port the ingress listens on (default: 8080)",
    )
    parser.add_argument(
        "--workers",
        type=cli_args.positive_int,
        default=1,
        metavar="N",
        help="worker processes, each consuming every handled queue (default: 1)",
    )


@dataclass
class Child:
    """One supervised process: how to start it, and how it has fared."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    pids: list[int] = field(default_factory=list)
    gave_up: bool = False


def children(
    settings: Settings, host: str, port: int, workers: int, environ: Mapping[str, str]
) -> list[Child]:
    """The ingress and the workers, each run by this same interpreter."""
    base = [sys.executable, "-m", "hookpipe.cli"]
    env = dict(environ)
    plan = [Child("ingress", [*base, "ingress", "--host", host, "--port", str(port)], env)]
    for i in range(workers):
        worker_env = dict(env)
        # Each worker serves its metrics on a port of its own: base port + i (0: none).
        metrics_port = settings.worker_metrics_port + i if settings.worker_metrics_port else 0
        worker_env["HOOKPIPE_WORKER_METRICS_PORT"] = str(metrics_port)
        plan.append(Child(f"worker-{i + 1}", [*base, "worker"], worker_env))
    return plan


async def keep_running(child: Child, stop: asyncio.Event, grace: float) -> int | None:
    """Run `child`, restart it when it dies, and once `stop` is set stop it; its last exit code."""
    backoff = RESTART_BACKOFF
    while True:
        started = time.monotonic()
        # A process group of its own: a terminal's Ctrl-C reaches only the supervisor, which
        # then sends each child exactly one SIGTERM (a second signal could cut a drain short).
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, env=child.env, process_group=0
        )
        child.pids.append(child.process.pid)
        log.info("started", child=child.name, pid=child.process.pid)
        exited = asyncio.ensure_future(child.process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            return await _stop_child(child, exited, grace)
        code = exited.result()
        if code == EXIT_WILL_NOT_HEAL:
            # The child said why (one line above); restarting it would fail the same way.
            child.gave_up = True
            log.error(
                "a child cannot start and a restart will not fix it; stopping",
                child=child.name,
                exit_code=code,
            )
            stop.set()
            return code
        if time.monotonic() - started >= HEALTHY_AFTER:
            backoff = RESTART_BACKOFF
        child.restarts += 1
        log.warning(
            "child exited; restarting it",
            child=child.name,
            exit_code=code,
            restart_in_s=backoff,
            restarts=child.restarts,
        )
        try:
            await asyncio.wait_for(stop.wait(), timeout=backoff)
            return code
        except TimeoutError:
            pass
        backoff = min(backoff * 2, RESTART_BACKOFF_CAP)


async def _stop_child(child: Child, exited: asyncio.Future[int], grace: float) -> int:
    process = child.process
    assert process is not None
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(asyncio.shield(exited), timeout=grace + STOP_MARGIN)
    except TimeoutError:
        log.error("child did not stop in time; killing it", child=child.name, pid=process.pid)
        process.kill()
        return await exited


async def supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run the pipeline until SIGINT or SIGTERM; the exit code."""
    from hookpipe.topology import declare_with

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    busy = _port_in_use(host, port)
    if busy is not None:
        log.error(
            f"cannot listen on {host}:{port} ({busy}): is another `hookpipe run` or ingress "
            "running? Stop it, or pass --port"
        )
        return 2
    try:
        await declare_with(settings)
    except SetupError as exc:
        log.error(f"cannot declare the topology: {exc}")
        return 2
    except Exception as exc:
        log.error("cannot declare the topology", error_type=type(exc).__name__)
        return 1
    plan = children(settings, host, port, workers, os.environ)
    tasks = [
        asyncio.create_task(keep_running(child, stop, settings.shutdown_grace)) for child in plan
    ]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
    waiting = asyncio.create_task(_wait_ready(url, stop))
    await asyncio.wait(
        {waiting, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if not stop.is_set():
        if not waiting.result():
            log.warning("the ingress is not ready yet", url=url)
        print(banner(url, plan, settings), flush=True)
    else:
        waiting.cancel()
    await stop.wait()
    log.info("stopping: each child drains and exits")
    codes = await asyncio.gather(*tasks)
    for child, code in zip(plan, codes, strict=True):
        log.info("stopped", child=child.name, exit_code=code)
    return 2 if any(child.gave_up for child in plan) else 0


def _port_in_use(host: str, port: int) -> str | None:
    """Why the ingress could not listen on host:port, or None if it can (checked by binding)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


async def _wait_ready(url: str, stop: asyncio.Event) -> bool:
    """Whether the ingress became ready (listening, and connected to the broker) in time."""
    import aiohttp

    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < deadline and not stop.is_set():
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return True
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    return False


def banner(url: str, plan: list[Child], settings: Settings) -> str:
    """What to do next: send a first webhook, read the ledger."""
    command = _hookpipe_command()
    workers = [c for c in plan if c.name.startswith("worker")]
    simulate = f"{command} simulate jodo order.payment.debited"
    if url != "http://127.0.0.1:8080":  # simulate's default
        simulate += f" --url {url}/webhooks/jodo"
    metrics = ""
    if settings.worker_metrics_port:
        ports = ", ".join(c.env["HOOKPIPE_WORKER_METRICS_PORT"] for c in workers)
        metrics = f" (metrics on port {ports})"
    return "\n".join(
        [
            "",
            f"hookpipe is running: ingress on {url}, {len(workers)} worker(s){metrics}.",
            "",
            "Send a first webhook, from another terminal in this directory:",
            f"  set -a; . var/dev.env; set +a; {simulate}",
            "Then read the ledger:",
            f"  set -a; . var/dev.env; set +a; {command} payments list",
            "",
            "Ctrl-C stops everything (workers finish what they hold first).",
            "",
        ]
    )


def _hookpipe_command() -> str:
    """`hookpipe` if that is this installation's script on PATH, else its path."""
    script = Path(sys.executable).parent / "hookpipe"
    found = shutil.which("hookpipe")
    if found and Path(found).resolve() == script.resolve():
        return "hookpipe"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(supervise(settings, args.host, args.port, args.workers))
