"""`hookpipe ingress [--host H] [--port P]`: serve the HTTP ingress until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable

from hookpipe import cli_args, providers
from hookpipe.errors import SetupError
from hookpipe.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--port", type=cli_args.listen_port, default=8080, help="port to listen on (default 8080)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """0 once stopped; 2 when the address cannot be listened on or the spool directory cannot be
    used (a restart will not help)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(serve(settings, args.host, args.port))
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


async def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests and let in-flight ones finish."""
    import structlog
    from aiohttp import web

    from hookpipe.ingress.app import create_app
    from hookpipe.ingress.server import GuardedSite, listening_socket, server_options

    log = structlog.get_logger()
    # The port first, then the app: a taken port or a bad setting it finds (e.g. a DreamClass
    # key that is not base64) stops the start before a broker connection is begun.
    sock = listening_socket(host, port)
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
