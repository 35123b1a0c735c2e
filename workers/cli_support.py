"""What the operator commands (`hookpipe dlq`, `hookpipe events`) share: Ctrl-C that stops after
the message in hand, a progress bar on a terminal, JSON lines, ages for people."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from typing import IO, Any, Protocol

import orjson


@contextlib.asynccontextmanager
async def interruptible() -> AsyncIterator[asyncio.Event]:
    """An event set by Ctrl-C or SIGTERM: commands stop after the message in hand and report."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


class Progress:
    """A one-line progress bar on a terminal, redrawn in place, with a count per action."""

    WIDTH = 30

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.counts: dict[str, int] = {}
        self.drawn = False

    def update(self, action: str, fraction: float, where: str) -> None:
        """Count one `action` and redraw: `fraction` done (0 to 1), `where` says how far."""
        self.counts[action] = self.counts.get(action, 0) + 1
        filled = round(self.WIDTH * min(max(fraction, 0.0), 1.0))
        counts = " ".join(f"{name} {n}" for name, n in sorted(self.counts.items()))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {where} {counts}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def human_age(age: timedelta | None) -> str:
    """5s, 3m 12s, 2h 5m, 3d 4h: the two largest units."""
    if age is None:
        return "-"
    seconds = max(int(age.total_seconds()), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def print_json(value: dict[str, Any]) -> None:
    """One JSON object as a line of stdout, flushed (a reader may be waiting for it)."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Replayed(Protocol):
    """What a replay's report says in the end, whichever replay it was."""

    @property
    def failed(self) -> int: ...
    @property
    def interrupted(self) -> bool: ...


def finish_replay(
    report: Replayed,
    *,
    command: str,
    as_json: bool,
    summary: Callable[[], dict[str, Any]],
    line: Callable[[], str],
    errors: Iterable[str],
) -> int:
    """Print a replay's summary (a JSON object, or a line and its errors on stderr); its exit
    code: failed, interrupted or fine."""
    if as_json:
        print_json({"summary": summary()})
    else:
        print(line())
        for error in errors:
            print(f"hookpipe {command}: {error}", file=sys.stderr)
    if report.failed:
        return EXIT_FAILED
    return EXIT_INTERRUPTED if report.interrupted else EXIT_OK
