"""A 3-node RabbitMQ cluster on loopback, beside the system broker, for the failover tests.

Each node has its own name, ports, config file (the system one pins the listener to 5672) and
data directory owned by the `rabbitmq` user, and shares the system node's Erlang cookie (the
nodes run as that user). Booting takes about 10 s; the nodes boot side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _free_port() -> int:
    """A port free a moment ago whose +20000 (the node's distribution port) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + 20000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 20000))
            except OSError:
                continue
        return port


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return self.url_for("/")

    def url_for(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{'' if vhost == '/' else vhost}"

    def pid(self) -> int | None:
        path = self.folder / "pid"
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the node's VM is alive (not whether its app has started)."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _as_rabbitmq(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["su", "rabbitmq", "-s", "/bin/sh", "-c", " ".join(argv)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def ctl(node: Node, *args: str, check: bool = True) -> str:
    return _as_rabbitmq("rabbitmqctl", "-q", "-n", node.name, *args, check=check)


def _start(node: Node) -> None:
    node.folder.mkdir(parents=True)
    (node.folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{node.port}\n")
    (node.folder / "plugins").write_text("[].\n")
    shutil.chown(node.folder, "rabbitmq", "rabbitmq")
    for child in node.folder.iterdir():
        shutil.chown(child, "rabbitmq", "rabbitmq")
    _boot(node)


def _boot(node: Node) -> None:
    env = (
        f"RABBITMQ_NODENAME={node.name} RABBITMQ_NODE_PORT={node.port} "
        f"RABBITMQ_DIST_PORT={node.port + 20000} "
        f"RABBITMQ_CONFIG_FILE={node.folder}/rabbitmq.conf "
        f"RABBITMQ_ENABLED_PLUGINS_FILE={node.folder}/plugins "
        f"RABBITMQ_MNESIA_BASE={node.folder}/mnesia RABBITMQ_LOG_BASE={node.folder}/log "
        f"RABBITMQ_PID_FILE={node.folder}/pid"
    )
    _as_rabbitmq(env, "rabbitmq-server", "-detached")


def _await(node: Node, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ctl(node, "await_startup", check=False) == "" and node.pid() is not None:
            status = subprocess.run(
                ["su", "rabbitmq", "-s", "/bin/sh", "-c", f"rabbitmqctl -q -n {node.name} status"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if status.returncode == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"node {node.name} did not start within {timeout:.0f} s")


def _stop(node: Node) -> None:
    pid = node.pid()
    ctl(node, "stop", check=False)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def cluster() -> Iterator[list[Node]]:
    """Three clustered nodes on loopback, stopped and removed after the session."""
    with running_cluster() as nodes:
        yield nodes


@contextlib.contextmanager
def running_cluster() -> Iterator[list[Node]]:
    """Three clustered nodes on loopback, stopped and their data removed on leaving."""
    if shutil.which("rabbitmq-server") is None:
        raise RuntimeError("rabbitmq-server is not installed: the cluster tests need it")
    base = Path(tempfile.mkdtemp(prefix="hookpipe-cluster-"))
    shutil.chown(base, "rabbitmq", "rabbitmq")
    # Names and ports of this run's own: a node of an earlier run may still be going away.
    run = uuid.uuid4().hex[:6]
    nodes = [
        Node(f"hookpipe-{run}-c{n}@localhost", _free_port(), base / f"c{n}") for n in (1, 2, 3)
    ]
    try:
        for node in nodes:
            _start(node)
        for node in nodes:
            _await(node)
        for node in nodes[1:]:
            ctl(node, "stop_app")
            ctl(node, "join_cluster", nodes[0].name)
            ctl(node, "start_app")
        yield nodes
    finally:
        for node in nodes:
            _stop(node)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def healthy_cluster(cluster: list[Node]) -> list[Node]:
    """The session's cluster with its three nodes up: a node an earlier test killed or stopped
    is started again (it rejoins the cluster from its data directory)."""
    return restarted(cluster)


def restarted(nodes: list[Node]) -> list[Node]:
    """The nodes, each one that is down booted again (it rejoins from its data directory)."""
    down = [node for node in nodes if not node.running()]
    for node in down:
        _boot(node)
    for node in down:
        _await(node)
    return nodes


def add_vhost(node: Node) -> str:
    """A new vhost for guest, so that a test declares the queues itself, on the node it chooses
    (a quorum queue's first leader is the node that declared it)."""
    vhost = f"failover-{uuid.uuid4().hex[:8]}"
    ctl(node, "add_vhost", vhost)
    ctl(node, "set_permissions", "-p", vhost, "guest", *["'.*'"] * 3)
    return vhost


def kill(node: Node) -> None:
    """kill -9 the node's VM: what a crashed machine looks like to the others."""
    pid = node.pid()
    assert pid is not None, f"no pid for {node.name}"
    os.kill(pid, signal.SIGKILL)


def stop(node: Node) -> None:
    """Stop the node gracefully (`rabbitmqctl stop`): what a restart for maintenance looks like;
    returns once the node is down."""
    ctl(node, "stop")
