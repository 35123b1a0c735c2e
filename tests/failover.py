"""A broker node killed under load, as processes: `python -m tests.failover [--rate R] [--mode M]`.

Boots a 3-node RabbitMQ cluster on loopback (tests/cluster.py), declares the topology through its
first node (which then leads every quorum queue: the harder case), and starts `hookpipe ingress`
and `hookpipe worker` with HOOKPIPE_AMQP_URL listing the three nodes, as an operator would. Each is
started again until it is connected to that first node, so that one `kill -9` takes both
connections and every queue's leader. Jodo webhooks go to the ingress at a steady rate, each with a
payment of its own; `--warmup` seconds in, the ingress's node is killed (-9); the load goes on
`--after` seconds, then the run waits until every webhook answered 200 is in the ledger and prints
the figures: answers, how long 503s were answered, lost, applied twice, the pause in the ledger's
applies, the drain. `--mode spool` keeps the ingress's outage spool on, `--mode no-spool` turns it
off (HOOKPIPE_SPOOL_DIR=off: 503 while no node takes a webhook); by default both run, one after the
other, on one cluster (the killed node booted again in between). See docs/resilience.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aiohttp import ClientSession

from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from tests.attack import wait_ready as wait_ingress_ready
from tests.cluster import Node, add_vhost, ctl, kill, restarted, running_cluster
from tests.conftest import PROVIDER_SECTIONS
from tests.faults import (
    Applied,
    Sent,
    check_alive,
    declare_topology,
    ledger_contents,
    p50_p99_max,
    send_load,
    start_process,
    stop_processes,
    wait_drained,
    wait_worker_started,
)
from tests.worker_support import free_port, subprocess_env, wait_until

MODES = ("no-spool", "spool")


@dataclass(frozen=True)
class Options:
    rate: float
    warmup: float
    after: float
    modes: tuple[str, ...]
    reconnect_interval: float
    drain_timeout: float


def connected_node(nodes: Sequence[Node], vhost: str, name_prefix: str) -> Node | None:
    """The node (by its AMQP port) a connection of `vhost` whose name starts with `name_prefix`
    is connected to; None while there is none. Any running node lists the whole cluster's."""
    asked = next(node for node in nodes if node.running())
    listed = ctl(
        asked,
        "list_connections",
        "port",
        "vhost",
        "client_properties",
        "--formatter",
        "json",
        check=False,
    )
    try:
        connections: list[dict[str, Any]] = json.loads(listed or "[]")
    except ValueError:  # a node that is still starting answers with a message
        return None
    for connection in connections:
        properties = {key: value for key, _, value in connection["client_properties"]}
        name = str(properties.get("connection_name", ""))
        if connection["vhost"] == vhost and name.startswith(name_prefix):
            return next(node for node in nodes if node.port == connection["port"])
    return None


async def _node_of(nodes: Sequence[Node], vhost: str, prefix: str) -> Node:
    for _ in range(100):
        node = await asyncio.to_thread(connected_node, nodes, vhost, prefix)
        if node is not None:
            return node
        await asyncio.sleep(0.2)
    raise SystemExit(f"no connection named {prefix}... in {vhost}")


async def _none_named(nodes: Sequence[Node], vhost: str, prefix: str) -> bool:
    return await asyncio.to_thread(connected_node, nodes, vhost, prefix) is None


async def _scrape_counter(port: int, name: str) -> float:
    async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def run_once(options: Options, mode: str, nodes: list[Node], folder: Path) -> list[str]:
    """One run: start, load, kill the ingress's node, drain; the report's lines."""
    first = nodes[0]
    vhost = await asyncio.to_thread(add_vhost, first)
    urls = ",".join(node.url_for(vhost) for node in nodes)
    ledger_url = f"sqlite:///{folder / 'ledger.sqlite3'}"
    settings = Settings(
        amqp_url=urls,
        ledger_url=ledger_url,
        reconnect_interval=options.reconnect_interval,
        worker_metrics_port=0,
        sections=PROVIDER_SECTIONS,
    )
    spool = str(folder / "spool") if mode == "spool" else "off"
    env = subprocess_env(settings, HOOKPIPE_SPOOL_DIR=spool)
    await declare_topology({**env, "HOOKPIPE_AMQP_URL": first.url_for(vhost)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ingress = ["ingress", "--host", "127.0.0.1", "--port", str(port)]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    sent: list[Sent] = []
    connection = None
    try:
        # Each process picks a node at random: started again until both are on the leader's.
        victim = first
        starts = {"ingress": 0, "worker": 0}
        for name, args in (("ingress", ingress), ("worker", ["worker"])):
            while True:
                starts[name] += 1
                processes[name] = start_process(folder, name, args, env)
                if name == "ingress":
                    await wait_ingress_ready(url)
                else:
                    await wait_worker_started(folder, processes)
                if await _node_of(nodes, vhost, f"{name}@") == victim or starts[name] == 30:
                    break
                await asyncio.to_thread(stop_processes, [processes.pop(name)])
                # The next start's connection must be the one seen, not this one's going away.
                await wait_until(
                    functools.partial(_none_named, nodes, vhost, f"{name}@"),
                    within=30,
                    what="the stopped process's connection closed",
                )
        others = [node for node in nodes if node is not victim]
        print(
            f"{mode}: the ingress (start {starts['ingress']}) on "
            f"{(await _node_of(nodes, vhost, 'ingress@')).name}, the worker (start "
            f"{starts['worker']}) on {(await _node_of(nodes, vhost, 'worker@')).name}, "
            f"the queues' leader {victim.name}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(url, None, options.rate, 0.0, stop, sent))
        await asyncio.sleep(options.warmup)
        killed_at = time.time()
        await asyncio.to_thread(kill, victim)
        print(f"{mode}: killed {victim.name} (-9)", file=sys.stderr, flush=True)
        await asyncio.sleep(options.after)
        stop.set()
        await load
        load_ended = time.time()
        connection = await aio_pika.connect(others[0].url_for(vhost))
        channel = await connection.channel()
        expected = {(s.provider, s.ledger_id) for s in sent if s.status == 200}
        drained = await wait_drained(
            channel,
            ledger_url,
            expected,
            handled_queues(),
            options.drain_timeout,
            lambda: check_alive(folder, processes),
        )
        spooled = await _scrape_counter(port, "hookpipe_ingress_spooled_total")
        applied, payments = await ledger_contents(ledger_url)
    finally:
        if connection is not None:
            await connection.close()
        await asyncio.to_thread(stop_processes, list(processes.values()))
    return report(mode, options, sent, applied, payments, killed_at, load_ended, drained, spooled)


def report(
    mode: str,
    options: Options,
    sent: list[Sent],
    applied: list[Applied],
    payments: list[list[str]],
    killed_at: float,
    load_ended: float,
    drained: float | None,
    spooled: float,
) -> list[str]:
    accepted = {(s.provider, s.ledger_id) for s in sent if s.status == 200}
    done = {(a.provider, a.event_id) for a in applied}
    twice = sum(len(ids) - 1 for ids in payments if len(ids) > 1)
    statuses = Counter(s.status for s in sent)
    refused = sorted(s.at for s in sent if s.status == 503)
    span = f"{refused[-1] - refused[0]:.2f} s" if refused else "0 s"
    after_kill = sorted(a.applied_at for a in applied if a.applied_at >= killed_at)
    gaps = [b - a for a, b in zip([killed_at, *after_kill], after_kill, strict=False)]
    before = [s.seconds for s in sent if s.at < killed_at and s.status == 200]
    around = [s.seconds for s in sent if killed_at <= s.at < killed_at + 10 and s.status == 200]

    return [
        f"{mode}: {options.rate:g} webhooks/s, kill -9 of the ingress's node "
        f"{options.warmup:g} s in, {options.after:g} s of load after",
        f"  sent {len(sent)}; answers {dict(sorted(statuses.items()))}; "
        f"503s: {len(refused)}, sent over {span}"
        + (f" (the first {refused[0] - killed_at:+.2f} s from the kill)" if refused else ""),
        f"  spooled by the ingress: {spooled:.0f}",
        f"  applied {len(done & accepted)} of {len(accepted)} answered 200; lost "
        f"{len(accepted - done)}; applied twice {twice}",
        f"  the ledger's longest pause after the kill: {max(gaps, default=0.0):.2f} s",
        f"  POST->answer ms p50/p99/max: before {p50_p99_max(before)}, "
        f"10 s from the kill {p50_p99_max(around)}",
        "  everything applied and the queues empty "
        + (f"{drained - load_ended:.1f} s after the load" if drained else "NOT in time"),
    ]


async def run(options: Options, nodes: list[Node], folder: Path) -> list[str]:
    lines: list[str] = []
    for mode in options.modes:
        await asyncio.to_thread(restarted, nodes)
        (folder / mode).mkdir()
        lines += await run_once(options, mode, nodes, folder / mode)
    return lines


def parse(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.failover", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks a second")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=20.0, help="seconds of load after")
    parser.add_argument("--mode", choices=MODES, help="one of them (default: both)")
    parser.add_argument(
        "--reconnect-interval", type=float, default=1.0, help="HOOKPIPE_RECONNECT_INTERVAL"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    return Options(
        rate=args.rate,
        warmup=args.warmup,
        after=args.after,
        modes=(args.mode,) if args.mode else MODES,
        reconnect_interval=args.reconnect_interval,
        drain_timeout=args.drain_timeout,
    )


def main() -> None:
    options = parse(sys.argv[1:])
    folder = Path(tempfile.mkdtemp(prefix="hookpipe-failover-"))
    with running_cluster() as nodes:
        lines = asyncio.run(run(options, nodes, folder))
    print("\n".join(lines))
    print(f"logs: {folder}")


if __name__ == "__main__":
    main()
