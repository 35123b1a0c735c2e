"""The `hookpipe` command: one entry point, a module per subcommand.

Each subcommand module exposes `configure(parser)` and `run(args, settings) -> exit code`; only
the module of the command being run is imported, so `hookpipe payments` does not load the ingress.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hookpipe import __version__, providers, tracing
from hookpipe.errors import SettingsError, SetupError
from hookpipe.logs import configure_logging
from hookpipe.settings import Settings

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ingress": ("hookpipe.ingress.command", "run the HTTP ingress"),
    "worker": ("hookpipe.workers.command", "consume handled queues and apply events to the ledger"),
    "run": ("hookpipe.supervisor", "development all-in-one: topology, ingress and workers"),
    "topology": ("hookpipe.topology", "declare exchanges and queues"),
    "simulate": ("hookpipe.ingress.simulate", "sign a provider's example webhook and POST it"),
    "dlq": ("hookpipe.workers.dlq", "inspect, replay and purge dead letters"),
    "payments": ("hookpipe.workers.payments_cli", "read the payments ledger"),
    "events": (
        "hookpipe.workers.events_cli",
        "the archive of every accepted webhook: list, show, replay, export",
    ),
}
# The commands that trace what they do when OTEL_TRACES_EXPORTER asks for it.
TRACED = frozenset({"ingress", "worker"})


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    return (
        "usage: hookpipe COMMAND [ARGS]\n       hookpipe --version\n\ncommands:\n"
        + "\n".join(lines)
        + ("\n\n'hookpipe COMMAND --help' tells a command's arguments.")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args_list else 2
    if args_list[0] == "--version":
        print(f"hookpipe {__version__}")
        return 0
    command = args_list[0]
    if command not in SUBCOMMANDS:
        print(f"hookpipe: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_text = SUBCOMMANDS[command]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"hookpipe {command}", description=help_text)
        module.configure(parser)
        args = parser.parse_args(args_list[1:])
        # Providers from plugins bring settings of their own, read with the rest.
        settings = Settings.from_env()
        configure_logging(settings.log_format, settings.log_level)
        if command in TRACED:
            tracing.configure(command)
        try:
            return int(module.run(args, settings))
        finally:
            tracing.shut_down()  # exports the spans still waiting in the batch
    except SettingsError as exc:
        print(f"hookpipe: bad setting: {exc}", file=sys.stderr)
        return 2
    except providers.ProviderError as exc:
        print(f"hookpipe: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        # The broker or the ledger cannot be used as configured: one line, what and what to do.
        print(f"hookpipe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
