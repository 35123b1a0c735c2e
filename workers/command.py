"""`hookpipe worker`: consume handled queues until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from hookpipe import cli_args, providers
from hookpipe.broker import BrokerConnectError
from hookpipe.errors import SetupError
from hookpipe.settings import Settings

log = structlog.get_logger()

# Exit codes: 2 when a restart will not help (a usage error, a refused broker login or vhost, a
# ledger that cannot be used as configured, a busy metrics port), 1 when the worker cannot start
# for another reason.
EXIT_USAGE = 2
EXIT_FAILED = 1


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
    return _run_loop(serve(settings, queues, args.concurrency or settings.worker_concurrency))


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
    from hookpipe.workers.metrics import WorkerMetrics, bound_port, start_metrics_server
    from hookpipe.workers.runtime import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = WorkerMetrics()
    # Unwound in reverse: drain the worker, then stop serving metrics, then close the ledger.
    async with contextlib.AsyncExitStack() as stack:
        try:
            handlers = await stack.enter_async_context(open_handlers(settings))
        except SetupError as exc:
            log.error("cannot open the ledger", reason=str(exc))
            return EXIT_USAGE
        except Exception as exc:
            return _failed("cannot open the ledger or the handlers' resources", exc)
        missing = [q for q in queues if q not in handlers]
        if missing:
            log.error("no handler for these queues", queues=missing)
            return EXIT_FAILED
        metrics_port = None
        if settings.worker_metrics_port:
            try:
                runner = await start_metrics_server(metrics, settings.worker_metrics_port)
            except OSError as exc:
                log.error(
                    f"cannot serve metrics on port {settings.worker_metrics_port} "
                    f"({exc.strerror or exc}): set HOOKPIPE_WORKER_METRICS_PORT to a free port, "
                    "or 0 for none"
                )
                return EXIT_USAGE
            stack.push_async_callback(runner.cleanup)
            metrics_port = bound_port(runner)
        worker = Worker(
            settings, {q: handlers[q] for q in queues}, concurrency=concurrency, metrics=metrics
        )
        try:
            await worker.start()
        except BrokerConnectError as exc:
            log.error("cannot consume", reason=str(exc))
            return EXIT_USAGE if exc.permanent else EXIT_FAILED
        except Exception as exc:
            return _failed("cannot consume", exc)
        stack.push_async_callback(worker.stop)
        log.info(
            "worker started",
            worker=worker.name,
            queues=list(queues),
            concurrency=concurrency,
            metrics_port=metrics_port,
        )
        await stop.wait()
        log.info("stopping: no new messages, draining those in flight", in_flight=worker.in_flight)
    log.info("worker stopped")
    return 0


def _failed(what: str, exc: BaseException) -> int:
    from hookpipe.workers.outcome import error_text

    # error_text: the same masking as dead letters get, for errors that may quote a URL or a value.
    log.error(what, error_type=type(exc).__name__, error=error_text(exc))
    return EXIT_FAILED
