"""deploy/ is checked here as far as this machine can: no container engine or cluster runs here.

The RabbitMQ definitions are imported into the real broker (under names of this run's own) and
their least-privilege permissions are tried with real connections.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import pytest
import yaml

from hookpipe import constants as c
from hookpipe import providers
from hookpipe.providers import handled_queues
from tests.conftest import rabbitmqctl

DEPLOY = Path(__file__).parent.parent / "deploy"
TEST_USER = "guest"  # the account of conftest's amqp_url


def _load_gen() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_definitions", DEPLOY / "gen_definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_definitions_file_matches_the_topology_plan() -> None:
    gen = _load_gen()
    committed = (DEPLOY / "rabbitmq" / "definitions.json").read_text()
    assert committed == gen.render(), "run: .venv/bin/python deploy/gen_definitions.py"


def test_compose_runs_a_worker_service_per_provider() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for provider in providers.names():
        service = services[f"worker-{provider}"]
        assert service["command"] == ["worker", "--provider", provider]
        assert service["environment"]["HOOKPIPE_DECLARE_TOPOLOGY"] == "false"
    for service in services.values():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]


def test_every_handled_queue_has_a_keda_trigger() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "workers.yaml").read_text()))
    triggered = {
        trigger["metadata"]["queueName"]
        for doc in docs
        if doc["kind"] == "ScaledObject"
        for trigger in doc["spec"]["triggers"]
    }
    assert triggered == set(handled_queues())


@dataclass(frozen=True)
class Imported:
    """The definitions file as imported into the broker."""

    user_url: Callable[[str], str]  # "ingress" -> the URL that user connects with
    test_url: str  # the tests' own account, in the same vhost
    queues: list[str]


@pytest.fixture(scope="module")
def imported() -> Iterator[Imported]:
    """The definitions file imported under a vhost and user names of this module's own.

    Imported once for the module: an import and its clean-up take six rabbitmqctl runs of most
    of a second each.
    """
    gen = _load_gen()
    suffix = uuid.uuid4().hex[:6]
    document = gen.build()
    vhost = f"hookpipe-defs-{suffix}"
    renamed = {user: f"{user}-{suffix}" for user in gen.PLACEHOLDER_USERS}
    document["vhosts"] = [{"name": vhost}]
    for section in ("exchanges", "queues", "bindings", "permissions"):
        for item in document[section]:
            item["vhost"] = vhost
    for item in document["users"]:
        item["name"] = renamed[item["name"]]
    for item in document["permissions"]:
        item["user"] = renamed[item["user"]]
    # The tests' own account, to empty the queues between tests; the users' rights are unchanged.
    document["permissions"].append(
        {"user": TEST_USER, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
    )
    # Through stdin: the broker runs as its own user and may not read the test's temp dir.
    subprocess.run(
        ["rabbitmqctl", "-q", "import_definitions", "--format", "json"],
        input=json.dumps(document).encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    rabbitmqctl("await_startup")

    def url(user: str) -> str:
        password = gen.PLACEHOLDER_USERS[user][0]
        return f"amqp://{renamed[user]}:{password}@127.0.0.1:5672/{quote(vhost, safe='')}"

    try:
        yield Imported(
            user_url=url,
            test_url=f"amqp://{TEST_USER}:{TEST_USER}@127.0.0.1:5672/{quote(vhost, safe='')}",
            queues=[queue["name"] for queue in document["queues"]],
        )
    finally:
        # Side by side: each run starts a VM of its own, most of a second.
        cleanups = [
            *(["rabbitmqctl", "-q", "delete_user", name] for name in renamed.values()),
            ["rabbitmqctl", "-q", "delete_vhost", vhost],
        ]
        running = [subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL) for args in cleanups]
        for process in running:
            process.wait(timeout=60)


@pytest.fixture
async def imported_definitions(imported: Imported) -> Callable[[str], str]:
    """The URL of each user of the imported definitions, every queue emptied for this test."""
    async with await aio_pika.connect(imported.test_url) as connection:
        channel = await connection.channel()
        for name in imported.queues:
            queue = await channel.get_queue(name, ensure=False)
            await queue.purge()
    return imported.user_url


async def _connect(url: str) -> aio_pika.abc.AbstractConnection:
    """Connect once the broker has finished importing the users (the import is asynchronous)."""
    for _ in range(50):
        try:
            return await aio_pika.connect(url)
        except aiormq.exceptions.ProbableAuthenticationError:
            await asyncio.sleep(0.1)
    return await aio_pika.connect(url)


async def test_ingress_user_may_publish_but_not_consume(
    imported_definitions: Callable[[str], str],
) -> None:
    connection = await _connect(imported_definitions("ingress"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{}", message_id="jodo:x"), routing_key="jodo.order.payment.debited"
        )
        queue = await channel.get_queue("jodo.order.payment.debited", ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.get(fail=False)


async def test_worker_user_may_consume_but_not_publish_events(
    imported_definitions: Callable[[str], str],
) -> None:
    connection = await _connect(imported_definitions("worker"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue("jodo.order.payment.debited", ensure=False)
        assert await queue.get(fail=False) is None
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await exchange.publish(
                aio_pika.Message(b"{}"), routing_key="jodo.order.payment.debited"
            )
