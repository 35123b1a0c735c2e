"""`hookpipe worker`: consume handled queues until SIGTERM or SIGINT, then drain and exit 0.

With `--processes N`, a parent runs N such workers (hookpipe.processes) and serves their metrics,
merged, and their health on the one metrics port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from hookpipe import cli_args, heap, host_metrics, processes, providers
from hookpipe.broker import BrokerConnectError
from hookpipe.errors import SetupError
from hookpipe.settings import Settings

if TYPE_CHECKING:
    from hookpipe.workers.metrics import WorkerMetrics
    from hookpipe.workers.runtime import Worker

log = structlog.get_logger()

# Exit codes: 2 when a restart will not help (a usage error, a refused broker login or vhost, a
# ledger that cannot be used as configured, a busy metrics port), 1 when the worker cannot start
# for another reason.
EXIT_USAGE = 2
EXIT_FAILED = 1
# How often a worker writes whether it is consuming, for the /readyz of a --processes parent.
CONSUMING_INTERVAL: Final = 0.5


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="Q",
        help="a handled queue to consume (repeatable); default: every handled queue",
    )
    parser.add_argument(
        "--provider",
        action="append",
        default=[],
        choices=providers.names(),
        metavar="P",
        help="consume every queue of this provider (repeatable; one of "
        f"{', '.join(providers.names())})",
    )
    parser.add_argument(
        "--concurrency",
        type=cli_args.positive_int,
        default=None,
        metavar="N",
        help="handlers running at once (default: HOOKPIPE_WORKER_CONCURRENCY)",
    )
    parser.add_argument(
        "--processes",
        type=cli_args.positive_int,
        default=1,
        metavar="N",
        help="worker processes to run, supervised, their metrics and health on one port "
        "(default: 1, this process)",
    )


def select_queues(
    queues: Sequence[str], names: Sequence[str], handled: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The queues named plus every queue of the providers named; all handled queues if neither.

    Raises ValueError naming any queue that is not handled.
    """
    handled = providers.handled_queues() if handled is None else handled
    unknown = [q for q in queues if q not in handled]
    if unknown:
        raise ValueError(
            f"not a handled queue: {', '.join(unknown)}; handled queues: {', '.join(handled)}"
        )
    if not queues and not names:
        return tuple(handled)
    chosen = {*queues, *(q for q in handled if q.partition(".")[0] in names)}
    return tuple(q for q in handled if q in chosen)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        queues = select_queues(args.queue, args.provider)
    except ValueError as exc:
        print(f"hookpipe worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.processes > 1:
        # asyncio's own loop: uvloop cannot start a child in a process group of its own.
        return asyncio.run(serve_processes(settings, child_args(args), args.processes))
    # Before prometheus_client is imported (by serve): it picks its value store then.
    host_metrics.share(settings.metrics_dir, "worker")
    return _run_loop(serve(settings, queues, args.concurrency or settings.worker_concurrency))


def child_args(args: argparse.Namespace) -> list[str]:
    """The arguments of `hookpipe worker` a child of `--processes` gets: the same, less that."""
    argv = [f"--queue={q}" for q in args.queue] + [f"--provider={p}" for p in args.provider]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    return argv


async def serve_processes(settings: Settings, argv: Sequence[str], count: int) -> int:
    """Run `count` worker processes until SIGTERM or SIGINT, serving their metrics and health."""
    from hookpipe.workers.metrics import MetricsEndpoint

    stop = processes.stop_on_signals()
    with processes.shared_metrics(settings, "worker") as shared:
        # The children serve no port: this process serves theirs, merged.
        env = processes.child_env(
            os.environ, metrics_dir=str(shared.path.parent), worker_metrics_port="0"
        )
        plan = [
            processes.Child(f"worker-{i + 1}", processes.command("worker", *argv), env)
            for i in range(count)
        ]
        endpoint = MetricsEndpoint(
            lambda: host_metrics.render(shared.path), lambda: _children_ready(plan, shared.path)
        )
        if settings.worker_metrics_port:
            try:
                await endpoint.open(settings.worker_metrics_port, shared=not shared.alone)
            except OSError as exc:
                log.error(_port_taken(settings.worker_metrics_port, exc))
                return EXIT_USAGE
        log.info("worker processes starting", processes=count, metrics_port=endpoint.port)
        try:
            return await processes.run_children(plan, stop, settings.shutdown_grace)
        finally:
            await endpoint.close()


def _children_ready(
    plan: Sequence[processes.Child], directory: Path
) -> tuple[bool, dict[str, Any]]:
    """Ready when every child is running and says it is consuming."""
    consuming = host_metrics.per_process(directory, "hookpipe_worker_consuming")
    states: dict[str, str] = {}
    for child in plan:
        process = child.process
        if process is None or process.returncode is not None:
            states[child.name] = "not running"
        elif consuming.get(process.pid) == 1:
            states[child.name] = "consuming"
        else:
            states[child.name] = "not consuming"
    return all(state == "consuming" for state in states.values()), {"processes": states}


def _port_taken(port: int, exc: OSError) -> str:
    return (
        f"cannot serve metrics on port {port} ({exc.strerror or exc}): set "
        "HOOKPIPE_WORKER_METRICS_PORT to a free port, or 0 for none"
    )


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # optional: a faster event loop where it is installed
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


async def serve(settings: Settings, queues: Sequence[str], concurrency: int) -> int:
    """Run a worker on `queues` until SIGTERM or SIGINT; the exit code."""
    from hookpipe.workers.handlers import open_handlers
    from hookpipe.workers.metrics import MetricsEndpoint, WorkerMetrics
    from hookpipe.workers.runtime import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = WorkerMetrics()
    # Unwound in reverse: drain the worker, then stop serving metrics, then close the ledger.
    async with contextlib.AsyncExitStack() as stack:
        try:
            handlers = await stack.enter_async_context(open_handlers(settings, concurrency))
        except SetupError as exc:
            log.error("cannot open the ledger", reason=str(exc))
            return EXIT_USAGE
        except Exception as exc:
            return _failed("cannot open the ledger or the handlers' resources", exc)
        missing = [q for q in queues if q not in handlers]
        if missing:
            log.error("no handler for these queues", queues=missing)
            return EXIT_FAILED
        worker = Worker(
            settings, {q: handlers[q] for q in queues}, concurrency=concurrency, metrics=metrics
        )
        endpoint = MetricsEndpoint(metrics.render, lambda: _ready(worker))
        if settings.worker_metrics_port:
            shared = host_metrics.shared()
            try:
                await endpoint.open(
                    settings.worker_metrics_port, shared=shared is not None and not shared.alone
                )
            except OSError as exc:
                log.error(_port_taken(settings.worker_metrics_port, exc))
                return EXIT_USAGE
            stack.push_async_callback(endpoint.close)
        try:
            await worker.start()
        except BrokerConnectError as exc:
            log.error("cannot consume", reason=str(exc))
            return EXIT_USAGE if exc.permanent else EXIT_FAILED
        except Exception as exc:
            return _failed("cannot consume", exc)
        stack.push_async_callback(worker.stop)
        reporting = asyncio.create_task(_report_consuming(worker, metrics))
        stack.callback(reporting.cancel)
        heap.settle()
        log.info(
            "worker started",
            worker=worker.name,
            queues=list(queues),
            concurrency=concurrency,
            metrics_port=endpoint.port,
        )
        await stop.wait()
        log.info("stopping: no new messages, draining those in flight", in_flight=worker.in_flight)
    log.info("worker stopped")
    return 0


def _ready(worker: Worker) -> tuple[bool, dict[str, Any]]:
    consuming = worker.consuming
    return consuming, {"broker": "consuming" if consuming else "not consuming"}


async def _report_consuming(worker: Worker, metrics: WorkerMetrics) -> None:
    while True:
        metrics.consuming.set(1 if worker.consuming else 0)
        await asyncio.sleep(CONSUMING_INTERVAL)


def _failed(what: str, exc: BaseException) -> int:
    from hookpipe.workers.outcome import error_text

    # error_text: the same masking as dead letters get, for errors that may quote a URL or a value.
    log.error(what, error_type=type(exc).__name__, error=error_text(exc))
    return EXIT_FAILED
