"""`python -m bench --profile`: where the ingress and the worker spend their CPU, by py-spy.

py-spy samples a running process from outside (no code change, little overhead) and writes
collapsed stacks; this module sums them into a few buckets (HTTP server, signature, JSON,
AMQP client, database driver, logging, metrics, our own code, event loop) and the top
functions. It is a separate run from the figures, so its overhead never skews them.

py-spy is not a dependency of hookpipe: `.venv/bin/pip install py-spy` first.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench import wrk
from bench.context import Bench

SAMPLE_RATE = 250  # per second: enough samples in 10 s for 1 % buckets to mean something
SECONDS = 10

# First match from the innermost frame outwards decides a sample's bucket: time in hmac called
# from ingress code counts as "signature", time in the ingress's own lines as "ingress".
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging (structlog, logging)", ("structlog/", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("JSON / msgspec", ("msgspec/", "orjson", "json/")),
    ("signature (hmac, hashlib)", ("hmac.py", "hashlib.py")),
    ("PostgreSQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLite driver (aiosqlite)", ("aiosqlite/", "sqlite3/")),
    ("AMQP client (aio-pika, aiormq, pamqp)", ("aio_pika/", "aiormq/", "pamqp/")),
    ("HTTP server (aiohttp, yarl, multidict)", ("aiohttp/", "yarl/", "multidict/")),
    ("hookpipe: ingress/", ("ingress/",)),
    ("hookpipe: workers/", ("workers/",)),
    ("hookpipe: schemas/", ("schemas/",)),
    ("hookpipe: hookpipe/", ("hookpipe/",)),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/")),
)
OWN_CODE = ("ingress/", "workers/", "schemas/", "hookpipe/")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str

    def __str__(self) -> str:
        return f"{self.function} ({self.file})"


def parse(raw: str) -> list[tuple[list[Frame], int]]:
    """py-spy's raw (collapsed) output: one `frame;frame;... count` line per distinct stack."""
    samples = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for text in stack.split(";"):
            match = _FRAME.match(text.strip())
            frames.append(
                Frame(match["function"], match["file"]) if match else Frame(text.strip(), "")
            )
        samples.append((frames, int(count)))
    return samples


def bucket_of(frames: list[Frame]) -> str:
    for frame in reversed(frames):
        for name, markers in BUCKETS:
            if any(marker in frame.file for marker in markers):
                return name
    return "other"


def summarize(title: str, raw: str, seconds: float) -> str:
    """A text report: CPU use, buckets, top self time, top inclusive time of our own code."""
    samples = parse(raw)
    total = sum(count for _, count in samples)
    if total == 0:
        return f"## {title}\n\nno samples: was the process busy?\n"
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in samples:
        buckets[bucket_of(frames)] += count
        leaves[str(frames[-1])] += count
        for name in {str(f) for f in frames if f.file.startswith(OWN_CODE)}:
            own[name] += count
    busy = total / (SAMPLE_RATE * seconds)
    lines = [
        f"## {title}",
        "",
        f"{total} samples at {SAMPLE_RATE}/s over {seconds:g} s: the process was on CPU "
        f"{busy:.0%} of the time (samples taken only while it runs Python).",
        "",
        "| bucket (innermost match) | share |",
        "|---|---|",
    ]
    lines += [f"| {name} | {count / total:.1%} |" for name, count in buckets.most_common()]
    lines += ["", "| top self time (leaf frame) | share |", "|---|---|"]
    lines += [f"| `{name}` | {count / total:.1%} |" for name, count in leaves.most_common(15)]
    lines += ["", "| our code, inclusive | share |", "|---|---|"]
    lines += [f"| `{name}` | {count / total:.1%} |" for name, count in own.most_common(15)]
    return "\n".join(lines) + "\n"


async def _record(pid: int, seconds: float, out: Path) -> str:
    """py-spy record of a running process for `seconds`; the raw collapsed stacks."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        str(SAMPLE_RATE),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), seconds + 60)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return out.read_text()


async def profile_ingress(b: Bench, folder: Path) -> str:
    """The ingress under closed-loop load (wrk, or the Python generator)."""
    child, port = await b.start_ingress()
    try:
        wrk_path, _ = wrk.ensure_installed()
        if wrk_path:
            script, data = wrk.write_inputs(b.workdir, b.series(), 60_000)
            load = asyncio.ensure_future(
                wrk.run(
                    wrk_path,
                    port,
                    script,
                    data,
                    seconds=SECONDS + 3,
                    connections=b.scale.connections,
                )
            )
        else:
            load = asyncio.ensure_future(
                b.loadgen(
                    "profile-load",
                    port,
                    "closed",
                    b.series(),
                    connections=b.scale.connections,
                    seconds=SECONDS + 3,
                    timeout=SECONDS + 60,
                )
            )
        await asyncio.sleep(1.5)  # past the start-up
        raw = await _record(child.pid, SECONDS, folder / "ingress.txt")
        await load
    finally:
        b.stop(child)
        await b.purge()
    return summarize("ingress under load (signed Jodo webhooks, 32 connections)", raw, SECONDS)


async def profile_worker(b: Bench, folder: Path, ledger: str, label: str) -> str:
    """One worker draining preloaded events."""
    await b.purge()
    await b.preload(b.series(), 40_000)  # more than it can drain while recorded
    worker = await b.start_worker(ledger)
    try:
        await asyncio.sleep(1.0)
        raw = await _record(worker.pid, SECONDS, folder / f"worker-{label}.txt")
    finally:
        b.stop(worker)
        await b.purge()
    return summarize(f"worker on {label}, draining preloaded Jodo events", raw, SECONDS)


async def run(b: Bench, results: Path, started: datetime) -> int:
    """Profile the ingress and the worker (PostgreSQL, SQLite); print and keep the reports."""
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        print("bench --profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    folder = results / f"profile-{started.strftime('%Y%m%dT%H%M%SZ')}"
    folder.mkdir(parents=True, exist_ok=True)
    reports: list[str] = []
    reports.append(await profile_ingress(b, folder))
    reports.append(
        await profile_worker(b, folder, await b.databases.create("profile"), "PostgreSQL")
    )
    reports.append(
        await profile_worker(b, folder, f"sqlite:///{b.path('profile.sqlite3')}", "SQLite")
    )
    text = "\n".join(reports)
    (folder / "summary.md").write_text(text)
    print(text)
    print(f"raw stacks and summary in {folder}")
    return 0
