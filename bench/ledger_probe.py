"""Reading a ledger from outside the worker: how many events it applied, and when.

The worker's ledger stamps each processed event (`processed_events.applied_at`) inside the
transaction that applies it, just before the commit; the bench reads those stamps rather than
polling, so its own queries never load the database while a figure is being measured. The bare
ceiling consumer writes a table of the same name and columns, so both read the same way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path

import asyncpg


def _sqlite_path(url: str) -> Path:
    # As the ledger reads it: sqlite:///rel/path is relative, sqlite:////abs/path absolute.
    return Path(url.removeprefix("sqlite://").removeprefix("/").split("?", 1)[0])


async def applied_count(url: str) -> int:
    """Events recorded as processed so far (0 before the schema exists)."""
    if url.startswith("sqlite:"):
        return await asyncio.to_thread(_sqlite_count, _sqlite_path(url))
    connection = await asyncpg.connect(url, timeout=10)
    try:
        count: int = await connection.fetchval(
            "SELECT CASE WHEN to_regclass('processed_events') IS NULL THEN 0"
            " ELSE (SELECT count(*) FROM processed_events) END"
        )
        return count
    finally:
        await connection.close()


def _sqlite_count(path: Path) -> int:
    if not path.exists():
        return 0
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return int(connection.execute("SELECT count(*) FROM processed_events").fetchone()[0])
    except sqlite3.OperationalError:  # no table yet: the worker is still migrating
        return 0
    finally:
        connection.close()


async def applied_times_ms(url: str) -> dict[str, float]:
    """Each processed event's id and its applied_at, in ms since the epoch."""
    if url.startswith("sqlite:"):
        return await asyncio.to_thread(_sqlite_times, _sqlite_path(url))
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT event_id, extract(epoch FROM applied_at) * 1000 FROM processed_events"
        )
    finally:
        await connection.close()
    return {row[0]: float(row[1]) for row in rows}


def _sqlite_times(path: Path) -> dict[str, float]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute("SELECT event_id, applied_at FROM processed_events").fetchall()
    finally:
        connection.close()
    return {event: datetime.fromisoformat(at).timestamp() * 1000 for event, at in rows}


async def apply_rate(url: str) -> tuple[int, float]:
    """(events, events per second between the first and the last one applied)."""
    times = sorted((await applied_times_ms(url)).values())
    if len(times) < 2 or times[-1] <= times[0]:
        return len(times), 0.0
    return len(times), (len(times) - 1) / ((times[-1] - times[0]) / 1000)
