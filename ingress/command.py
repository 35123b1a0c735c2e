"""`hookpipe ingress [--host H] [--port P] [--processes N]`: serve the HTTP ingress until
SIGTERM or Ctrl-C.

With `--processes N` a parent runs N ingress processes on the one port (SO_REUSEPORT: the kernel
spreads connections over them), each with a spool subdirectory of its own, their metrics shared
so that any one's GET /metrics counts all (hookpipe.processes, hookpipe.host_metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

from hookpipe import cli_args, heap, host_metrics, processes, providers
from hookpipe.errors import SetupError
from hookpipe.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=cli_args.listen_port, default=8080, help="port to listen on (default 8080)"
    )
    parser.add_argument(
        "--processes",
        type=cli_args.positive_int,
        default=1,
        metavar="N",
        help="ingress processes on the one port, supervised (default: 1, this process)",
    )
    # How the parent of --processes starts its children: the port is shared.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """0 once stopped; 2 when the address cannot be listened on or the spool directory cannot be
    used (a restart will not help)."""
    if args.processes > 1:
        return asyncio.run(serve_processes(settings, args.host, args.port, args.processes))
    # Before prometheus_client is imported (by serve): it picks its value store then.
    host_metrics.share(settings.metrics_dir, "ingress")
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(serve(settings, args.host, args.port, reuse_port=args.reuse_port))
        except SetupError as exc:
            import structlog

            structlog.get_logger().error(str(exc))
            return 2
        except OSError as exc:
            import structlog

            structlog.get_logger().error(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}): is another "
                "ingress running there? Stop it, or pass --port"
            )
            return 2
    return 0


async def serve_processes(settings: Settings, host: str, port: int, count: int) -> int:
    """Run `count` ingress processes on host:port until SIGTERM or SIGINT; the exit code."""
    import structlog

    log = structlog.get_logger()
    stop = processes.stop_on_signals()
    # Checked here as the children bind with SO_REUSEPORT, which a busy port does not stop if
    # its holder set it too.
    busy = processes.port_in_use(host, port)
    if busy is not None:
        log.error(
            f"cannot listen on {host}:{port} ({busy}): is another ingress running there? Stop "
            "it, or pass --port"
        )
        return 2
    with contextlib.ExitStack() as stack:
        spools: list[Path] | None = None
        if settings.spool_dir:
            from hookpipe.ingress.spool import shared_out

            try:
                spools = stack.enter_context(shared_out(Path(settings.spool_dir), count))
            except SetupError as exc:
                log.error(str(exc))
                return 2
        shared = stack.enter_context(processes.shared_metrics(settings, "ingress"))
        argv = processes.command("ingress", "--host", host, "--port", str(port), "--reuse-port")
        plan = []
        for index in range(count):
            env = processes.child_env(
                os.environ,
                metrics_dir=str(shared.path.parent),
                # The same subdirectory for the same index: a restarted child publishes what
                # its predecessor spooled.
                spool_dir=str(spools[index]) if spools else "off",
            )
            plan.append(processes.Child(f"ingress-{index + 1}", argv, env))
        log.info("ingress processes starting", processes=count, listening_on=f"{host}:{port}")
        return await processes.run_children(plan, stop, settings.shutdown_grace)
    raise AssertionError("unreachable")  # for mypy: the with block returns


async def serve(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests and let in-flight ones finish."""
    import structlog
    from aiohttp import web

    from hookpipe.ingress.app import create_app
    from hookpipe.ingress.server import GuardedSite, listening_socket, server_options

    log = structlog.get_logger()
    # The port first, then the app: a taken port or a bad setting it finds (e.g. a DreamClass
    # key that is not base64) stops the start before a broker connection is begun.
    sock = listening_socket(host, port, reuse_port=reuse_port)
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=settings.shutdown_grace, **server_options(settings)
    )
    await runner.setup()
    try:
        site = GuardedSite(runner, sock)
        await site.start()
        heap.settle()
        known = providers.providers().values()
        log.info(
            "ingress listening",
            # Not "address": log keys that name personal data (a postal address) are redacted.
            listening_on=", ".join(_address(a) for a in runner.addresses),
            providers=[p.name for p in known if p.configured(settings)],
            not_configured=[p.name for p in known if not p.configured(settings)],
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("ingress stopping")
    finally:
        await runner.cleanup()


def _address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed: a faster HTTP and AMQP path."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop
    return None
