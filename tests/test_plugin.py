"""A provider from another installed distribution: tests/plugin_example (Acme Billing) is installed
with pip, then one of its signed webhooks goes through the real ingress, broker, worker and ledger
under `hookpipe run`, and shows in `hookpipe payments` and `hookpipe dlq` like a built-in one's."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from hookpipe.settings import Settings
from tests.worker_support import free_port, subprocess_env, wait_until

EXAMPLE = Path(__file__).parent / "plugin_example"
ACME_SECRET = "acme-test-secret"
QUEUE = "acme.payment.succeeded"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the example plugin is pip-installed into, for the children's PYTHONPATH."""
    target = tmp_path_factory.mktemp("plugin")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            # The venv's own setuptools builds it: an isolated build environment would install
            # one afresh each run.
            "--no-build-isolation",
            "--target",
            target,
            EXAMPLE,
        ],
        check=True,
        capture_output=True,
    )
    assert list(target.glob("acme_hookpipe-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def plugin_env(
    plugin_path: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> dict[str, str]:
    settings = make_settings(
        ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite3'}", worker_metrics_port=0
    )
    return subprocess_env(settings, PYTHONPATH=str(plugin_path), HOOKPIPE_ACME_SECRET=ACME_SECRET)


@pytest.fixture
async def running(broker: object, plugin_env: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    """`hookpipe run` with the plugin installed; yields the ingress's base URL."""
    port = free_port()
    out = tmp_path / "run.out"
    with out.open("wb") as out_file, (tmp_path / "run.err").open("wb") as err_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hookpipe.cli",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=plugin_env,
            stdout=out_file,
            stderr=err_file,
            start_new_session=True,
        )
    try:
        await wait_until(
            lambda: "hookpipe is running" in out.read_text(), within=30, what="the banner"
        )
        yield f"http://127.0.0.1:{port}"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def hookpipe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookpipe.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def acme_signed(body: bytes) -> dict[str, str]:
    """Acme's scheme, written here again so that the plugin's own code is not its own judge."""
    digest = hmac.new(ACME_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Acme-Signature": digest, "Content-Type": "application/json"}


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status


async def test_a_plugin_provider_goes_through_the_whole_pipeline(
    running: str, plugin_env: dict[str, str]
) -> None:
    body = (EXAMPLE / "acme_hookpipe" / "acme.payment.succeeded.json").read_bytes()
    url = f"{running}/webhooks/acme"
    assert await post(url, body, {**acme_signed(body), "X-Acme-Signature": "0" * 64}) == 401
    assert await post(url, body, acme_signed(body)) == 200

    def shown() -> bool:
        return (
            hookpipe(plugin_env, "payments", "show", "acme", "pay_0001", "--json").returncode == 0
        )

    await wait_until(shown, within=20, what="the Acme payment in the ledger")
    payment = json.loads(
        hookpipe(plugin_env, "payments", "show", "acme", "pay_0001", "--json").stdout
    )
    assert payment["provider"] == "acme"
    assert payment["status"] == "paid"
    assert payment["amount"] == "1250.50"
    assert payment["currency"] == "EUR"
    assert payment["events"] == ["evt_0001"]
    listed = hookpipe(plugin_env, "payments", "list", "--provider", "acme", "--json")
    assert [json.loads(line)["payment_id"] for line in listed.stdout.splitlines()] == ["pay_0001"]

    # An amount that is not a number: accepted (it is signed), then dead-lettered by the worker.
    broken = body.replace(b'"1250.50"', b'"a lot"').replace(b"evt_0001", b"evt_0002")
    assert await post(url, broken, acme_signed(broken)) == 200

    def dead_lettered() -> bool:
        listing = hookpipe(plugin_env, "dlq", "list", "--json")
        for line in listing.stdout.splitlines():
            entry = json.loads(line)
            if entry.get("queue") == QUEUE and entry.get("messages") == 1:
                return True
        return False

    await wait_until(dead_lettered, within=20, what="the broken Acme webhook in its DLQ")
    shown_letter = hookpipe(plugin_env, "dlq", "show", "--queue", QUEUE)
    assert shown_letter.returncode == 0, shown_letter.stderr
    assert "evt_0002" in shown_letter.stdout

    # The tour works for a plugin as for a built-in provider.
    simulated = hookpipe(
        plugin_env, "simulate", "acme", "payment.succeeded", "--fresh", "--url", url
    )
    assert simulated.returncode == 0, simulated.stderr
    assert simulated.stdout.startswith("200 ")
