"""A newcomer's mistakes (a wrong broker password or vhost, nothing listening, a busy port, a
missing database) each get one line saying what is wrong and what to do: never a traceback, never
a password, and `hookpipe run` stops instead of restarting what a restart will not fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from hookpipe.settings import Settings
from tests.worker_support import free_port, subprocess_env

# The password is wrong on purpose; it must never be printed.
WRONG = "amqp://guest:hunter2-wrong@127.0.0.1:5672/"


def hookpipe(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookpipe.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _env(test_settings: Settings, **changes: str) -> dict[str, str]:
    return subprocess_env(test_settings, **changes)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (WRONG, "refused the login of user 'guest': check the user and password"),
        (
            "amqp://guest:guest@127.0.0.1:5672/hookpipe-no-such-vhost",
            "refused vhost 'hookpipe-no-such-vhost' to user 'guest'",
        ),
        ("amqp://guest:guest@127.0.0.1:{port}/", "is RabbitMQ running there?"),
    ],
)
@pytest.mark.parametrize("command", [("topology", "declare"), ("dlq", "list")])
def test_a_broker_mistake_is_one_line_with_advice(
    test_settings: Settings, url: str, says: str, command: tuple[str, ...]
) -> None:
    result = hookpipe(_env(test_settings, HOOKPIPE_AMQP_URL=url.format(port=free_port())), *command)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_a_worker_with_a_refused_login_exits_2_saying_why(test_settings: Settings) -> None:
    result = hookpipe(_env(test_settings, HOOKPIPE_AMQP_URL=WRONG), "worker")

    assert result.returncode == 2
    [line] = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert line["event"] == "cannot consume"
    assert "refused the login of user 'guest'" in line["reason"]
    assert "hunter2" not in result.stderr


def test_a_missing_postgresql_database_is_one_line(test_settings: Settings) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/hookpipe_no_such_database"

    result = hookpipe(_env(test_settings, HOOKPIPE_LEDGER_URL=url), "payments", "list")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "hookpipe payments: cannot read the ledger: PostgreSQL at 127.0.0.1:5432 has no database "
        "'hookpipe_no_such_database': create it (createdb -h 127.0.0.1 -p 5432 -U postgres "
        "hookpipe_no_such_database), or fix HOOKPIPE_LEDGER_URL"
    ]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_a_busy_port_stops_the_ingress_with_exit_2(
    test_settings: Settings, taken_port: int
) -> None:
    result = hookpipe(
        _env(test_settings), "ingress", "--host", "127.0.0.1", "--port", str(taken_port)
    )

    assert result.returncode == 2
    [line] = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert line["event"].startswith(f"cannot listen on 127.0.0.1:{taken_port} (Address already")


def test_a_spool_directory_it_cannot_create_stops_the_ingress_with_exit_2(
    test_settings: Settings, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = _env(test_settings, HOOKPIPE_SPOOL_DIR=str(blocker / "spool"))

    result = hookpipe(env, "ingress", "--host", "127.0.0.1", "--port", str(free_port()))

    assert result.returncode == 2
    [line] = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert line["event"] == (
        f"cannot use the spool directory {blocker / 'spool'} (Not a directory): make it "
        "writable by this user, or set HOOKPIPE_SPOOL_DIR to one that is"
    )


def test_run_with_a_busy_port_says_so_and_starts_nothing(
    test_settings: Settings, taken_port: int
) -> None:
    result = hookpipe(_env(test_settings), "run", "--port", str(taken_port))

    assert result.returncode == 2
    assert result.stdout == ""  # no banner announcing a port it does not hold
    [line] = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert "is another `hookpipe run` or ingress running?" in line["event"]


def test_run_stops_when_a_worker_cannot_open_its_ledger(test_settings: Settings) -> None:
    env = _env(
        test_settings,
        HOOKPIPE_LEDGER_URL="postgresql://postgres@127.0.0.1:5432/hookpipe_no_such_database",
        HOOKPIPE_WORKER_METRICS_PORT="0",
    )

    result = hookpipe(env, "run", "--port", str(free_port()), timeout=90)

    assert result.returncode == 2
    events = [orjson.loads(text) for text in result.stderr.splitlines()]
    assert any(e["event"] == "cannot open the ledger" for e in events)
    stopped = [e for e in events if e["event"].startswith("a child cannot start")]
    assert [e["child"] for e in stopped] == ["worker-1"]
    # Not restarted: one start of the worker.
    assert sum(e["event"] == "started" and e["child"] == "worker-1" for e in events) == 1


def test_dlq_output_closed_early_is_not_a_broker_failure(test_settings: Settings) -> None:
    env = _env(test_settings)
    # `hookpipe dlq list --json | head -0`: the reader goes away before the first line.
    read, write = os.pipe()
    os.close(read)
    process = subprocess.run(
        [sys.executable, "-m", "hookpipe.cli", "dlq", "list", "--json"],
        env=env,
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write)

    assert "broker connection failed" not in process.stderr
    assert "the output was closed" in process.stderr
