"""`hookpipe run`: the development all-in-one.

Declares the topology, then runs `hookpipe ingress` and N `hookpipe worker` child processes,
restarts any that dies (with backoff), and on Ctrl-C / SIGTERM tells each to drain and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import structlog

from hookpipe import cli_args, processes
from hookpipe.errors import SetupError
from hookpipe.processes import Child
from hookpipe.settings import Settings

log = structlog.get_logger()

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


def children(
    settings: Settings, host: str, port: int, workers: int, environ: Mapping[str, str]
) -> list[Child]:
    """The ingress and the workers, each run by this same interpreter."""
    env = dict(environ)
    plan = [
        Child("ingress", processes.command("ingress", "--host", host, "--port", str(port)), env)
    ]
    for i in range(workers):
        worker_env = dict(env)
        # Each worker serves its metrics on a port of its own: base port + i (0: none).
        metrics_port = settings.worker_metrics_port + i if settings.worker_metrics_port else 0
        worker_env["HOOKPIPE_WORKER_METRICS_PORT"] = str(metrics_port)
        plan.append(Child(f"worker-{i + 1}", processes.command("worker"), worker_env))
    return plan


async def supervise(settings: Settings, host: str, port: int, workers: int) -> int:
    """Run the pipeline until SIGINT or SIGTERM; the exit code."""
    from hookpipe.topology import declare_with

    stop = processes.stop_on_signals()
    busy = processes.port_in_use(host, port)
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
    group = asyncio.create_task(processes.run_children(plan, stop, settings.shutdown_grace))
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
    return await group


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
