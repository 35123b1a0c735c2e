"""Several processes of one command, supervised: `hookpipe worker|ingress --processes N`, and
the ingress and workers of `hookpipe run`.

A parent starts its children (this same interpreter, `python -m hookpipe.cli ...`), restarts one
that dies (with backoff), and on SIGTERM, SIGINT or SIGHUP sends each child one SIGTERM and waits
while they drain. A child that exits with code 2 says a setting or the environment is wrong: it
is not restarted, the other children are stopped and the parent exits with 2 as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from hookpipe import host_metrics
from hookpipe.settings import ENV_PREFIX, Settings

log = structlog.get_logger()

# Beyond the children's own grace: time for them to close connections and exit.
STOP_MARGIN = 5.0
# Restart backoff: a child that keeps dying (broker down, port taken) is retried ever more
# slowly, up to the cap; one that ran this long before dying counts as healthy again.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_CAP = 30.0
HEALTHY_AFTER = 30.0
# A child's exit code for "a setting or the environment is wrong": not restarted (a bad setting,
# a busy port, a refused broker login or vhost, a ledger that cannot be used as configured).
EXIT_WILL_NOT_HEAL = 2


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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP: the parent's cue to stop its children."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def run_children(plan: Sequence[Child], stop: asyncio.Event, grace: float) -> int:
    """Keep every child of `plan` running until `stop` is set, then stop them all; 2 if one
    could not start for a reason a restart does not fix, else 0."""
    tasks = [asyncio.create_task(keep_running(child, stop, grace)) for child in plan]
    stopping = asyncio.ensure_future(stop.wait())
    # A task that ends before `stop` failed (a child that cannot even be started): stop the rest.
    await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    log.info("stopping: each child drains and exits")
    codes = await asyncio.gather(*tasks, return_exceptions=True)
    for child, code in zip(plan, codes, strict=True):
        if isinstance(code, BaseException):
            raise code
        log.info("stopped", child=child.name, exit_code=code)
    return EXIT_WILL_NOT_HEAL if any(child.gave_up for child in plan) else 0


def command(*args: str) -> list[str]:
    """The argv of a `hookpipe` child run by this same interpreter."""
    return [sys.executable, "-m", "hookpipe.cli", *args]


def child_env(environ: Mapping[str, str], **settings: str) -> dict[str, str]:
    """`environ` with these settings (field names: metrics_dir=...) given to a child; their
    `_FILE` variants are dropped so that they cannot win."""
    env = dict(environ)
    for name, value in settings.items():
        variable = ENV_PREFIX + name.upper()
        env.pop(f"{variable}_FILE", None)
        env[variable] = value
    return env


@contextlib.contextmanager
def shared_metrics(settings: Settings, role: str) -> Iterator[host_metrics.SharedDirectory]:
    """The metrics directory a parent and its children share: HOOKPIPE_METRICS_DIR, else a
    temporary one, removed when the parent is done."""
    if settings.metrics_dir:
        shared = host_metrics.share(settings.metrics_dir, role)
        assert shared is not None
        yield shared
        return
    directory = tempfile.mkdtemp(prefix=f"hookpipe-{role}-metrics-")
    try:
        shared = host_metrics.share(directory, role)
        assert shared is not None
        yield shared
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def port_in_use(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port, or None if it can (checked by binding)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
