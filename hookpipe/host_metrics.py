"""One metrics endpoint for several processes of a host: prometheus-client's multiprocess mode.

With HOOKPIPE_METRICS_DIR set (and always under `--processes N`, which then makes a temporary
one), each process writes its counters, histograms and gauges to files in
`<dir>/<role>` (`worker` or `ingress`), and whichever process serves the endpoint merges every
file there at each scrape: counters are summed over the processes, dead ones included, so that
they never go back. The first process to use the directory empties it (what an earlier run left
would be counted again); the others join. Every user holds a shared lock on `<dir>/<role>/lock`
for its life, which is how the first one knows it is alone.

`share()` must run before prometheus_client is imported: the library picks its value store then.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# The variable prometheus-client reads; hookpipe's own is HOOKPIPE_METRICS_DIR.
LIBRARY_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE: Final = "lock"


@dataclass(frozen=True)
class SharedDirectory:
    """Where this process's metrics go, and whether it found other live processes there."""

    path: Path
    alone: bool


_shared: SharedDirectory | None = None
_lock_fds: list[int] = []
_registry: CollectorRegistry | None = None


def share(metrics_dir: str, role: str) -> SharedDirectory | None:
    """Write this process's metrics under `metrics_dir`/`role` from now on (None: `metrics_dir`
    is empty, each process counts alone). Empties the directory if no live process uses it."""
    global _shared
    if not metrics_dir:
        return None
    directory = Path(metrics_dir) / role
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False
    if alone:
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    # Held until the process ends: the next one to start sees it is not alone.
    fcntl.flock(fd, fcntl.LOCK_SH)
    _lock_fds.append(fd)
    os.environ[LIBRARY_ENV] = str(directory)
    _shared = SharedDirectory(directory, alone)
    return _shared


def shared() -> SharedDirectory | None:
    """The directory `share()` chose for this process, if any."""
    return _shared


def scrape_registry(directory: Path) -> CollectorRegistry:
    """A registry that merges every process's files in `directory` when collected."""
    global _registry
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if _registry is None:
        _registry = CollectorRegistry()
        MultiProcessCollector(_registry, path=str(directory))  # type: ignore[no-untyped-call]
    return _registry


def render(directory: Path) -> bytes:
    """The text exposition of every process's metrics in `directory`."""
    from prometheus_client import generate_latest

    forget_dead(directory)
    return generate_latest(scrape_registry(directory))


def forget_dead(directory: Path) -> None:
    """Drop the live gauges of processes that have ended (their counters stay, summed)."""
    from prometheus_client.multiprocess import mark_process_dead

    for path in directory.glob("gauge_live*_*.db"):
        pid = _pid_of(path)
        if pid is not None and not _alive(pid):
            mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def per_process(directory: Path, name: str) -> dict[int, float]:
    """The value of the `liveall` gauge `name` in each live process that set it."""
    registry = scrape_registry(directory)
    forget_dead(directory)
    values: dict[int, float] = {}
    for family in registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            with contextlib.suppress(KeyError, ValueError):
                values[int(sample.labels["pid"])] = sample.value
    return values


def _pid_of(path: Path) -> int | None:
    # gauge_<mode>_<pid>.db
    try:
        return int(path.stem.rpartition("_")[2])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
