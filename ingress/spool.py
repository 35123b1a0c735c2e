"""The outage spool: webhooks no broker node took, kept on local disk until one does.

When the broker is unreachable, or does not confirm a publish within the publish timeout, the
ingress appends the webhook here and answers 200 once it is on disk: written and fsync'ed, the
fsync shared by every request that arrived meanwhile (a group commit, one fsync per batch, run
in a thread so the event loop keeps serving). A background task publishes what is spooled with
confirms once a node is back, oldest first, and deletes a segment file only after every webhook
in it was confirmed. While anything is spooled, new webhooks are spooled behind it rather than
published ahead of it, so the broker receives them in the order they were accepted.

On disk: numbered segment files (`0000000000000001.spool`, ...) in HOOKPIPE_SPOOL_DIR, each a run
of records `length (4 bytes) | crc32 (4 bytes) | msgpack payload`. A write that failed or was
cut by a crash was never answered 200; it can leave only a torn record at the end of a segment
(after a failed write the segment is closed and a new one begun), which the next start finds by
its length or checksum and drops. A process killed while draining publishes the segment it was
in again from its start at the next start: the broker then holds some webhooks twice, which the
workers' deduplication makes harmless (as for a provider's own retry).

A lock file keeps a second ingress out of a directory that one is using: each process needs its
own. `hookpipe ingress --processes N` gives its children `<dir>/0` to `<dir>/<N-1>`, the same
ones after a restart, and holds `<dir>` itself; before they start it moves segments left in
`<dir>` (by a single-process ingress) into `<dir>/0`, and those of `<dir>/<k>` for k >= N (an
earlier run with more processes) into `<dir>/<k mod N>`. A single-process ingress takes in the
numbered subdirectories' segments likewise. Moved segments are published after the target's
own: order is kept within a process's spool, not across processes (nor is it between the
processes of one ingress).

Bounded by HOOKPIPE_SPOOL_MAX_BYTES: past it (or when a write fails, e.g. the disk is full) a
webhook is answered 503, as it was before the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import structlog

from hookpipe.errors import BrokerUnavailable, SetupError

log = structlog.get_logger()

SUFFIX: Final = ".spool"
LOCK_FILE: Final = "lock"
# A segment is closed past this size and a new one begun: the unit of deletion after a drain,
# and of what a killed drain publishes again.
SEGMENT_BYTES: Final = 4 * 1024 * 1024
# Spooled webhooks the drain publishes at once, each awaiting its own confirm.
DRAIN_WINDOW: Final = 64
_HEADER = struct.Struct(">II")
_WAIT_FOR_BROKER: Final = 0.1
# After a failed drain publish with the broker seemingly up (a refusal), before the next try.
_RETRY_PAUSE: Final = 1.0
# The subdirectory of one process of `hookpipe ingress --processes N`: its index.
_PROCESS_DIRECTORY: Final = re.compile(r"[0-9]+")


class SpoolFull(BrokerUnavailable):
    """The spool is at its size limit, or cannot be written: the webhook is answered 503."""


class Spooled(msgspec.Struct, array_like=True, frozen=True):
    """One webhook as the ingress would have published it."""

    received_at_ms: int
    provider: str
    event_id: str
    event_type: str
    request_id: str
    body: bytes
    # The W3C traceparent of the request's span, when tracing is on: the later publish joins it.
    traceparent: str = ""


Publish = Callable[[Spooled], Awaitable[None]]

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Spooled).decode


def frame(record: Spooled) -> bytes:
    """A record as written to a segment."""
    payload = _encode(record)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_segment(path: Path) -> tuple[list[Spooled], int]:
    """The whole records of a segment, and the length of their bytes (what follows is torn)."""
    data = path.read_bytes()
    records: list[Spooled] = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        start, end = at + _HEADER.size, at + _HEADER.size + length
        payload = data[start:end]
        if end > len(data) or zlib.crc32(payload) != crc:
            break
        try:
            records.append(_decode(payload))
        except msgspec.DecodeError:
            break
        at = end
    return records, at


@dataclass
class _Segment:
    path: Path
    records: int = 0
    size: int = 0
    oldest_ms: int | None = None
    # Records at the start already confirmed by this process's drain.
    confirmed: int = 0


@dataclass
class _Waiting:
    data: bytes
    received_at_ms: int
    done: asyncio.Future[None]


class Spool:
    """Segments on disk, a writer task that group-commits appends, a drain task that publishes."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._sealed: deque[_Segment] = deque()
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._next_number = 1
        self._lock_fd: int | None = None
        self._waiting: list[_Waiting] = []
        self._waiting_bytes = 0
        self._records = 0
        self._bytes = 0
        self._wake_writer = asyncio.Event()
        self._wake_drain = asyncio.Event()
        self._seal_wanted = False
        self._sealed_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._full = False
        self.spooled_total = 0
        self.drained_total = 0

    # What the ingress and its metrics look at.

    @property
    def holding(self) -> bool:
        """Whether any webhook is spooled or on its way there (new ones then queue behind)."""
        return self._records > 0 or bool(self._waiting)

    @property
    def depth(self) -> int:
        """Webhooks on disk not yet confirmed by the broker."""
        return self._records

    @property
    def size(self) -> int:
        """Bytes the spool's segments take."""
        return self._bytes

    def oldest_age(self, now_ms: int | None = None) -> float:
        """Seconds since the oldest spooled webhook was received (0 when empty)."""
        oldest = next((s.oldest_ms for s in self._segments() if s.oldest_ms is not None), None)
        if oldest is None or self._records == 0:
            return 0.0
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return max(0.0, (now_ms - oldest) / 1000)

    def has_room(self) -> bool:
        """Whether the spool takes webhooks: not since it refused one for its size, until a
        drained segment frees some."""
        return not self._full and self._bytes + self._waiting_bytes < self.max_bytes

    # Life cycle.

    def open(self) -> None:
        """Take the directory (SetupError if another process has it) and find what an earlier
        process left in it."""
        self._lock_fd = _lock(self.directory)
        # What the processes of an earlier `--processes N` run left in their subdirectories.
        for subdirectory in _process_directories(self.directory):
            fd = _try_lock(subdirectory)
            if fd is None:
                log.warning(
                    "a spool subdirectory is in use; leaving it", spool_dir=str(subdirectory)
                )
                continue
            try:
                adopt(subdirectory, self.directory)
            finally:
                os.close(fd)
        for segment in self._recover():
            self._sealed.append(segment)
            self._records += segment.records
            self._bytes += segment.size
        if self._records:
            log.warning(
                "spool holds webhooks from an earlier run; publishing them once the broker "
                "takes them",
                spooled=self._records,
                spool_dir=str(self.directory),
            )

    def start(self, publish: Publish, broker_ready: Callable[[], bool]) -> None:
        """Start the writer and the drain; `publish` raises BrokerUnavailable on a failure."""
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="spool-writer"),
            asyncio.create_task(self._drain_loop(publish, broker_ready), name="spool-drain"),
        ]

    async def settle(self, within: float, broker_ready: Callable[[], bool]) -> None:
        """Before stopping: let the drain publish what is spooled, for up to `within` seconds,
        while the broker is there to take it."""
        deadline = time.monotonic() + within
        while self.holding and broker_ready() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_WAIT_FOR_BROKER)

    async def close(self) -> None:
        """Stop the tasks (appends still waiting fail), close the files; what is on disk stays."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._fail_waiting(SpoolFull("the ingress is stopping"))
        self._close_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._records:
            log.warning(
                "spool left on disk; an ingress started with this directory publishes it",
                spooled=self._records,
                spool_dir=str(self.directory),
            )

    # Appending.

    async def append(self, record: Spooled) -> None:
        """Return once `record` is on disk (fsync'ed); SpoolFull if it cannot be."""
        if not self._tasks:
            raise SpoolFull("the spool is not running")
        data = frame(record)
        if self._bytes + self._waiting_bytes + len(data) > self.max_bytes:
            self._full = True
            raise SpoolFull("the outage spool is full")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(data, record.received_at_ms, done))
        self._waiting_bytes += len(data)
        self._wake_writer.set()
        # Shielded: the write goes on for the others of its batch if this request is cancelled.
        await asyncio.shield(done)

    async def _write_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            if self._waiting:
                batch, self._waiting, self._waiting_bytes = self._waiting, [], 0
                await self._write(batch)
            if self._seal_wanted or (
                self._active is not None and self._active.size >= SEGMENT_BYTES
            ):
                self._seal()

    async def _write(self, batch: list[_Waiting]) -> None:
        data = b"".join(item.data for item in batch)
        try:
            if self._active is None:
                self._active = await asyncio.to_thread(self._begin_segment)
            await asyncio.to_thread(_write_all, self._fd, data)
        except OSError as exc:
            log.error(
                "cannot write to the outage spool; answering 503",
                spool_dir=str(self.directory),
                cause=exc.strerror or str(exc),
            )
            # What was written of this batch may be torn: it stays the segment's last bytes.
            self._seal()
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(SpoolFull("the outage spool cannot be written"))
            return
        segment = self._active
        if self._records == 0:
            log.warning(
                "the broker did not take a webhook; spooling webhooks to disk until it does",
                spool_dir=str(self.directory),
            )
        if segment.oldest_ms is None:
            segment.oldest_ms = batch[0].received_at_ms
        segment.records += len(batch)
        segment.size += len(data)
        self._records += len(batch)
        self._bytes += len(data)
        self.spooled_total += len(batch)
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)
        self._wake_drain.set()

    def _begin_segment(self) -> _Segment:
        path = self.directory / f"{self._next_number:016d}{SUFFIX}"
        self._next_number += 1
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _sync_directory(self.directory)  # the new file's name survives a crash too
        return _Segment(path)

    def _seal(self) -> None:
        """Close the segment being written; the next append begins a new one."""
        self._seal_wanted = False
        segment = self._active
        self._close_active()
        if segment is not None:
            if segment.records:
                self._sealed.append(segment)
            else:
                with contextlib.suppress(OSError):
                    segment.path.unlink()
        self._sealed_now.set()

    def _close_active(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._active = None

    def _fail_waiting(self, error: Exception) -> None:
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        for item in waiting:
            if not item.done.done():
                item.done.set_exception(error)

    # Draining.

    async def _drain_loop(self, publish: Publish, broker_ready: Callable[[], bool]) -> None:
        started: float | None = None
        published = 0
        while True:
            if self._records == 0:
                if started is not None and not self._waiting:
                    log.info(
                        "outage spool drained",
                        published=published,
                        seconds=round(time.monotonic() - started, 3),
                    )
                    started, published = None, 0
                self._wake_drain.clear()
                await self._wake_drain.wait()
                continue
            # Polled: readiness is the connection's and the channel's state, with no event of
            # its own to wait on.
            while not broker_ready():  # noqa: ASYNC110
                await asyncio.sleep(_WAIT_FOR_BROKER)
            if started is None:
                started = time.monotonic()
                log.info("publishing the outage spool", spooled=self._records)
            segment = await self._oldest_sealed()
            if segment is None:
                continue
            confirmed, finished = await self._drain_segment(segment, publish)
            published += confirmed
            if not finished:
                await asyncio.sleep(_RETRY_PAUSE)

    async def _oldest_sealed(self) -> _Segment | None:
        """The oldest closed segment, asking the writer to close the one it writes if needed."""
        if not self._sealed:
            if self._active is None or self._active.records == 0:
                # Appends are on their way: wait for the writer.
                self._wake_drain.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_WAIT_FOR_BROKER):
                        await self._wake_drain.wait()
                return None
            self._sealed_now.clear()
            self._seal_wanted = True
            self._wake_writer.set()
            await self._sealed_now.wait()
        return self._sealed[0] if self._sealed else None

    async def _drain_segment(self, segment: _Segment, publish: Publish) -> tuple[int, bool]:
        """Publish a segment's unconfirmed records and delete it when all are: how many were
        confirmed now, and whether all were."""
        records, _ = await asyncio.to_thread(read_segment, segment.path)
        records = records[: segment.records]
        confirmed_before = segment.confirmed
        while segment.confirmed < len(records):
            window = records[segment.confirmed : segment.confirmed + DRAIN_WINDOW]
            outcomes = await asyncio.gather(
                *(publish(record) for record in window), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, BrokerUnavailable):
                        raise outcome
                    log.warning(
                        "publishing the outage spool failed; retrying once the broker is back",
                        reason=str(outcome),
                        spooled=self._records,
                    )
                    return segment.confirmed - confirmed_before, False
                segment.confirmed += 1
                self._records -= 1
                self.drained_total += 1
            if segment.confirmed < len(records):
                segment.oldest_ms = records[segment.confirmed].received_at_ms
        self._sealed.remove(segment)
        self._bytes -= segment.size
        self._full = False
        await asyncio.to_thread(_unlink, segment.path)
        return segment.confirmed - confirmed_before, True

    # Recovery.

    def _recover(self) -> Iterator[_Segment]:
        paths = sorted(self.directory.glob(f"*{SUFFIX}"))
        for path in paths:
            with contextlib.suppress(ValueError):
                self._next_number = max(self._next_number, int(path.stem) + 1)
            records, whole = read_segment(path)
            torn = path.stat().st_size - whole
            if torn:
                log.warning(
                    "dropping the torn end of a spool segment (never answered 200)",
                    segment=path.name,
                    bytes=torn,
                )
                with open(path, "r+b") as file:
                    file.truncate(whole)
                    os.fsync(file.fileno())
            if not records:
                path.unlink()
                continue
            yield _Segment(path, len(records), whole, records[0].received_at_ms)

    def _segments(self) -> Iterator[_Segment]:
        yield from self._sealed
        if self._active is not None:
            yield self._active


@contextmanager
def shared_out(directory: Path, processes: int) -> Iterator[list[Path]]:
    """The spool directories of `processes` ingress processes, `directory`/0 and on, ready for
    them: `directory` is held (SetupError if a process has it) and its segments, and those of
    subdirectories past the last, are moved into theirs (see the module's docstring)."""
    lock_fd = _lock(directory)
    try:
        targets = [directory / str(index) for index in range(processes)]
        sources = [(directory, targets[0])]
        sources += [
            (sub, targets[int(sub.name) % processes])
            for sub in _process_directories(directory)
            if int(sub.name) >= processes
        ]
        for source, target in sources:
            if not any(source.glob(f"*{SUFFIX}")):
                continue
            target_fd = _lock(target)
            source_fd = None if source == directory else _try_lock(source)
            try:
                if source == directory or source_fd is not None:
                    adopt(source, target)
            finally:
                os.close(target_fd)
                if source_fd is not None:
                    os.close(source_fd)
        yield targets
    finally:
        os.close(lock_fd)


def adopt(source: Path, target: Path) -> int:
    """Move `source`'s segments into `target`, numbered after its own; how many. The caller
    keeps other processes out of both (their locks)."""
    segments = sorted(source.glob(f"*{SUFFIX}"))
    if not segments:
        return 0
    numbers = [int(p.stem) for p in target.glob(f"*{SUFFIX}") if p.stem.isdigit()]
    number = max(numbers, default=0) + 1
    for path in segments:
        os.rename(path, target / f"{number:016d}{SUFFIX}")
        number += 1
    _sync_directory(target)
    _sync_directory(source)
    log.warning(
        "moved the segments of another spool directory here; publishing them with this one's",
        segments=len(segments),
        spool_dir=str(target),
        moved_from=str(source),
    )
    return len(segments)


def _lock(directory: Path) -> int:
    """Create `directory` if need be and take its lock; SetupError if it cannot be used."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(directory)
    except OSError as exc:
        raise SetupError(
            f"cannot use the spool directory {directory} ({exc.strerror or exc}): make it "
            "writable by this user, or set HOOKPIPE_SPOOL_DIR to one that is"
        ) from exc
    if fd is None:
        raise SetupError(
            f"the spool directory {directory} is in use by another ingress process: give each "
            "its own HOOKPIPE_SPOOL_DIR"
        )
    return fd


def _try_lock(directory: Path) -> int | None:
    """The lock of `directory`, or None while another process holds it."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _process_directories(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.iterdir() if p.is_dir() and _PROCESS_DIRECTORY.fullmatch(p.name)),
        key=lambda p: int(p.name),
    )


def _write_all(fd: int | None, data: bytes) -> None:
    """Write every byte and make it durable (in a worker thread)."""
    if fd is None:
        raise OSError("no segment open")
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fdatasync(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
