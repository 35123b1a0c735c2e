"""The ingress attacked as an outsider would, as processes: `python -m tests.attack [N]`.

Starts `hookpipe ingress` and `hookpipe worker` (JSON logs, a vhost and a ledger of their own),
then sends N (default 10,000) fuzzed requests across the four providers (tests/test_ingress_fuzz
makes them), 20 copies of one webhook, and 100 webhooks at 100/s while 200 connections stall;
stops both processes and prints the figures: answers by status, 5xx, 200s for unauthenticated
requests, publishes, replays, the webhooks' p99 under the stall, the ingress's RSS, and the
lines of both processes' stderr that are not JSON.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson

from hookpipe.settings import Settings
from tests.conftest import (
    PROVIDER_SECTIONS,
    rabbitmqctl,
)
from tests.ingress_support import fresh_jodo
from tests.test_ingress_fuzz import (
    PROVIDERS,
    SEED,
    authentic_request,
    hostile_body,
    hostile_headers,
    resigned_elsewhere,
)
from tests.worker_support import free_port, subprocess_env


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _metric(session: aiohttp.ClientSession, url: str, prefix: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the ingress did not become ready")


async def attack(url: str, requests: int, ingress_pid: int) -> dict[str, object]:
    rng = random.Random(SEED)
    answers: Counter[int] = Counter()
    unauthenticated_200 = authenticated_200 = 0
    makers = (
        (lambda r, p: (hostile_body(r, p), hostile_headers(r))),
        resigned_elsewhere,
        authentic_request,
    )
    async with aiohttp.ClientSession() as session:
        rss_start = _rss_kib(ingress_pid)
        for _ in range(requests):
            provider = rng.choice(PROVIDERS)
            maker = rng.choice(makers)
            authentic = maker is authentic_request and provider != "unknown"
            body, headers = maker(rng, provider if provider != "unknown" else "jodo")
            async with session.post(
                f"{url}/webhooks/{provider}", data=body, headers=headers
            ) as answer:
                await answer.read()
                answers[answer.status] += 1
                if answer.status == 200:
                    if authentic:
                        authenticated_200 += 1
                    else:
                        unauthenticated_200 += 1
        rss_end = _rss_kib(ingress_pid)

        # One genuine webhook, 20 times.
        body, headers = fresh_jodo()
        replays_before = await _metric(session, url, "hookpipe_ingress_replays_total")
        copies = [
            (await session.post(f"{url}/webhooks/jodo", data=body, headers=headers)).status
            for _ in range(20)
        ]
        replays = await _metric(session, url, "hookpipe_ingress_replays_total") - replays_before

        # 200 stalled connections, and 100 webhooks at 100/s meanwhile.
        host, port = url.removeprefix("http://").split(":")
        stalled = []
        for n in range(200):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /webhooks/jodo HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n")
            if n % 2:
                writer.write(b"\r\n{")  # half a request: headers done, the body never comes
            stalled.append(writer)
        latencies = []
        for _ in range(100):
            body, headers = fresh_jodo()
            started = time.perf_counter()
            async with session.post(f"{url}/webhooks/jodo", data=body, headers=headers) as answer:
                assert answer.status == 200, answer.status
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, 0.01 - latencies[-1]))
        for writer in stalled:
            writer.close()
    return {
        "requests": requests,
        "answers": dict(sorted(answers.items())),
        "5xx": sum(n for status, n in answers.items() if status >= 500),
        "200_unauthenticated": unauthenticated_200,
        "200_authenticated": authenticated_200,
        "20_copies": {"answers": dict(Counter(copies)), "published": 20 - int(replays)},
        "p99_ms_with_200_stalled": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        "ingress_rss_kib": {"after_first_request": rss_start, "after_all": rss_end},
    }


def _not_json(path: Path) -> list[str]:
    bad = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            bad.append(line)
    return bad


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    vhost = f"hookpipe-attack-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    folder = Path(tempfile.mkdtemp(prefix="hookpipe-attack-"))
    settings = Settings(
        amqp_url=f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}",
        ledger_url=f"sqlite:///{folder / 'ledger.sqlite3'}",
        read_timeout=2.0,
        worker_metrics_port=0,
        sections=PROVIDER_SECTIONS,
    )
    env = subprocess_env(settings)
    command = [sys.executable, "-m", "hookpipe.cli"]
    port = free_port()
    subprocess.run([*command, "topology", "declare"], env=env, check=True, capture_output=True)
    logs = {name: folder / f"{name}.log" for name in ("ingress", "worker")}
    processes = {
        "ingress": subprocess.Popen(
            [*command, "ingress", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=logs["ingress"].open("w"),
        ),
        "worker": subprocess.Popen([*command, "worker"], env=env, stderr=logs["worker"].open("w")),
    }
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_ready(url))
        figures = asyncio.run(attack(url, requests, processes["ingress"].pid))
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            process.wait(timeout=60)
        rabbitmqctl("delete_vhost", vhost)
    figures["stderr_lines"] = {
        name: len(path.read_text().splitlines()) for name, path in logs.items()
    }
    figures["stderr_lines_not_json"] = {name: _not_json(path) for name, path in logs.items()}
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    print(f"logs: {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
