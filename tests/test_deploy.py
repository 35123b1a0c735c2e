"""deploy/ as far as this machine can run it: no container engine or cluster runs here.

The RabbitMQ definitions are loaded into the real broker under a vhost and user names of this
run's own, with passwords of its own, and the real `hookpipe ingress`, `hookpipe worker` and
operator commands run as child processes with exactly those users: every path a webhook can
take must work with the least privilege the file grants. Two ways to a topology are tried, as
deploy/README.md describes them: the whole file imported (compose: the broker loads it at boot),
and the users alone with `hookpipe topology declare` run as the operator (the Kubernetes Job).

The manifests' own checks (yamllint, Kubernetes schemas, KEDA's structure) are in
deploy/check_manifests.py, which `make lint` runs; the quick ones are repeated here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import re
import secrets
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL
from typing import Any
from urllib.parse import quote

import aio_pika
import aiohttp
import aiormq
import orjson
import pytest
import yaml

from hookpipe import constants as c
from hookpipe import providers
from hookpipe.providers import handled_queues
from hookpipe.settings import RetryPolicy, Settings
from hookpipe.workers.dreamclass_api import TRIES as API_TRIES
from hookpipe.workers.ledger import Ledger
from tests.conftest import fixture_bytes, queue_depth, rabbitmqctl
from tests.dreamclass_fake import FakeDreamClass
from tests.dreamclass_fake import dreamclass_fake as dreamclass_fake  # the fixture
from tests.ingress_support import dreamclass_body, signed
from tests.signers import jodo as jodo_signature
from tests.worker_support import HookpipeProcess, free_port, subprocess_env, wait_until

DEPLOY = Path(__file__).parent.parent / "deploy"
TEST_USER = "guest"  # the account of conftest's amqp_url: looks at and empties the queues
USERS = ("ingress", "worker", "operator")


def _load(name: str) -> Any:
    """A script of deploy/ as a module (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load("gen_definitions")


# --- the files -----------------------------------------------------------------------------


def test_definitions_file_matches_the_topology_plan() -> None:
    committed = (DEPLOY / "rabbitmq" / "definitions.json").read_text()
    assert committed == gen.render(), "run: .venv/bin/python deploy/gen_definitions.py"


def test_the_manifests_pass_their_structural_checks() -> None:
    # Schemas and yamllint need their tools and run in `make lint`; the structure is quick.
    checks = _load("check_manifests")
    assert checks.structural_problems() == []


def test_compose_runs_a_worker_service_per_provider() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    for provider in providers.names():
        service = services[f"worker-{provider}"]
        assert service["command"] == ["worker", "--provider", provider]
        assert service["environment"]["HOOKPIPE_DECLARE_TOPOLOGY"] == "false"
    for service in services.values():
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in compose["secrets"]


def test_compose_runs_the_rabbitmq_the_definitions_are_tested_on() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    image = compose["services"]["rabbitmq"]["image"]
    assert image.startswith(f"rabbitmq:{gen.RABBITMQ_VERSION}-"), image


def test_the_image_installs_every_dependency_from_the_lock() -> None:
    locked = {
        match.group(1).lower().replace("_", "-")
        for match in re.finditer(
            r"^([A-Za-z0-9_.-]+)==\S+ \\$",
            (DEPLOY / "requirements.lock").read_text(),
            re.MULTILINE,
        )
    }
    wanted = {
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"][
            "dependencies"
        ]
    }
    assert wanted <= locked, f"not locked: {wanted - locked}; run deploy/lock.sh"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.lock" in dockerfile


def test_the_broker_runs_the_version_the_definitions_are_tested_on() -> None:
    version = subprocess.run(
        ["rabbitmqctl", "version"], check=True, capture_output=True, text=True, timeout=240
    ).stdout.strip()
    assert version == gen.RABBITMQ_VERSION, (
        f"RabbitMQ {version} runs here, the definitions say {gen.RABBITMQ_VERSION}: test them on "
        "this one, then change RABBITMQ_VERSION in deploy/gen_definitions.py and compose.yaml"
    )


# --- the definitions in the real broker ----------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The definitions as loaded into the broker, under names of this run's own."""

    vhost: str
    users: dict[str, str]  # role ("ingress") -> the user's name in the broker
    passwords: dict[str, str]
    document: dict[str, Any]  # what was loaded, names changed

    def url(self, role: str) -> str:
        """The URL the role's user connects with."""
        return (
            f"amqp://{self.users[role]}:{self.passwords[role]}@127.0.0.1:5672/"
            f"{quote(self.vhost, safe='')}"
        )

    @property
    def test_url(self) -> str:
        return f"amqp://{TEST_USER}:{TEST_USER}@127.0.0.1:5672/{quote(self.vhost, safe='')}"


@pytest.fixture(scope="module")
def load_definitions() -> Iterator[Any]:
    """load(topology=True): the definitions file in a new vhost, its users with new passwords.

    With topology=False only the vhost, the users and their permissions are loaded: the broker
    of a Kubernetes cluster, before the topology Job ran. Everything is deleted at the end.
    """
    loaded: list[Loaded] = []

    def load(*, topology: bool = True) -> Loaded:
        suffix = uuid.uuid4().hex[:6]
        vhost = f"hookpipe-defs-{suffix}"
        names = {role: f"{role}-{suffix}" for role in USERS}
        passwords = {role: secrets.token_urlsafe(12) for role in USERS}
        document = gen.build()
        if not topology:
            for section in ("exchanges", "queues", "bindings"):
                document[section] = []
        document["vhosts"] = [{"name": vhost}]
        for section in ("exchanges", "queues", "bindings", "permissions"):
            for item in document[section]:
                item["vhost"] = vhost
        for item in document["users"]:
            role = item["name"]
            item["name"] = names[role]
            item["password_hash"] = gen.password_hash(passwords[role], secrets.token_bytes(4))
        for item in document["permissions"]:
            item["user"] = names[item["user"]]
        # The tests' own account, to look at and empty the queues; the users' rights unchanged.
        document["permissions"].append(
            {"user": TEST_USER, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        )
        # Through stdin: the broker runs as its own user and may not read the test's temp dir.
        subprocess.run(
            ["rabbitmqctl", "-q", "import_definitions", "--format", "json"],
            input=json.dumps(document).encode(),
            check=True,
            capture_output=True,
            # A broker busy with other tests' vhosts can take most of a minute to add one.
            timeout=240,
        )
        rabbitmqctl("await_startup")
        loaded.append(Loaded(vhost, names, passwords, document))
        return loaded[-1]

    try:
        yield load
    finally:
        # Side by side: each run starts a VM of its own, most of a second.
        cleanups = [
            args
            for each in loaded
            for args in (
                *(["rabbitmqctl", "-q", "delete_user", name] for name in each.users.values()),
                ["rabbitmqctl", "-q", "delete_vhost", each.vhost],
            )
        ]
        running = [subprocess.Popen(args, stdout=DEVNULL, stderr=DEVNULL) for args in cleanups]
        for process in running:
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def imported(load_definitions: Any) -> Loaded:
    """The whole file imported, as compose's broker loads it at boot."""
    result: Loaded = load_definitions()
    return result


@pytest.fixture(scope="module")
def job_declared(load_definitions: Any, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """Users and permissions only, then `hookpipe topology declare` as the operator: what the
    Kubernetes Job hookpipe-topology does on a fresh cluster."""
    loaded: Loaded = load_definitions(topology=False)
    settings = _production_settings(
        loaded, "operator", tmp_path_factory.mktemp("ledger") / "unused.sqlite3"
    )
    done = _run_hookpipe_sync(settings, "topology", "declare")
    assert done.returncode == 0, done.stderr
    return loaded


def _production_settings(loaded: Loaded, role: str, ledger: Path, **changes: Any) -> Settings:
    """Settings as in deploy/: the role's user, no declaring, the default topology (retry
    delays, delivery limit) the definitions were made from; two attempts, so a failure is
    dead-lettered after one retry (1 s) instead of five."""
    from tests.conftest import PROVIDER_SECTIONS

    defaults = Settings()
    return dataclasses.replace(
        defaults,
        amqp_url=loaded.url(role),
        ledger_url=f"sqlite:///{ledger}",
        declare_topology=False,
        retry=RetryPolicy(max_attempts=2),
        publish_timeout=2.0,
        worker_metrics_port=0,
        shutdown_grace=2.0,
        log_format="json",
        spool_dir="",  # off: a publish the broker refuses must show as a 503
        sections=PROVIDER_SECTIONS,
        **changes,
    )


def _run_hookpipe_sync(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookpipe.cli", *args],
        env=subprocess_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=DEVNULL,
    )


async def _run_hookpipe(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`hookpipe ARGS` as a child process: its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookpipe.cli",
        *args,
        env=subprocess_env(settings),
        stdin=DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def _connect(url: str) -> aio_pika.abc.AbstractConnection:
    """Connect once the broker has finished importing the users (the import is asynchronous)."""
    for _ in range(50):
        try:
            return await aio_pika.connect(url)
        except aiormq.exceptions.ProbableAuthenticationError:
            await asyncio.sleep(0.1)
    return await aio_pika.connect(url)


async def _empty_queues(loaded: Loaded) -> None:
    async with await _connect(loaded.test_url) as connection:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        for queue in loaded.document["queues"] or gen.build()["queues"]:
            # A stream cannot be purged (and holds nothing a test of the users counts).
            if queue["arguments"].get("x-queue-type") != "stream":
                await underlay.queue_purge(queue["name"])


# --- compose: the whole file imported ------------------------------------------------------


async def test_ingress_user_may_publish_but_not_consume(imported: Loaded) -> None:
    await _empty_queues(imported)
    async with await _connect(imported.url("ingress")) as connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.ACCEPTED_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{}", message_id="jodo:x"), routing_key="jodo.order.payment.debited"
        )
        queue = await channel.get_queue("jodo.order.payment.debited", ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.get(fail=False)


async def test_worker_user_may_consume_but_not_publish_events(imported: Loaded) -> None:
    await _empty_queues(imported)
    async with await _connect(imported.url("worker")) as connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue("jodo.order.payment.debited", ensure=False)
        assert await queue.get(fail=False) is None
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(c.EVENTS_EXCHANGE, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await exchange.publish(
                aio_pika.Message(b"{}"), routing_key="jodo.order.payment.debited"
            )


async def test_operator_declares_again_over_the_imported_topology(
    imported: Loaded, tmp_path: Path
) -> None:
    # The same names with other arguments would be refused (PRECONDITION_FAILED): the file
    # and the code's declaration agree, and the operator may redeclare after an upgrade.
    settings = _production_settings(imported, "operator", tmp_path / "unused.sqlite3")
    code, out, err = await _run_hookpipe(settings, "topology", "declare")
    assert code == 0, err
    assert "declared" in out


# --- Kubernetes: users only, the operator declares ------------------------------------------


def test_the_operator_declares_exactly_the_topology_of_the_definitions_file(
    job_declared: Loaded,
) -> None:
    exported = json.loads(
        subprocess.run(
            ["rabbitmqctl", "-q", "export_definitions", "-", "--format", "json"],
            check=True,
            capture_output=True,
            timeout=240,
        ).stdout
    )
    expected = gen.build()

    def of_vhost(section: str, document: dict[str, Any], vhost: str) -> list[str]:
        # Compared on the fields of the definitions file: an export adds some (a queue's
        # type) and leaves out others when they have their default (`internal`).
        fields = {"name", "type", "durable", "auto_delete", "arguments", "source"}
        fields |= {"destination", "destination_type", "routing_key"}
        if section == "queues":
            fields.discard("type")
        return sorted(
            orjson.dumps(
                {k: v for k, v in item.items() if k in fields}, option=orjson.OPT_SORT_KEYS
            ).decode()
            for item in document[section]
            if item["vhost"] == vhost
        )

    for section in ("exchanges", "queues", "bindings"):
        assert of_vhost(section, exported, job_declared.vhost) == of_vhost(
            section, expected, gen.VHOST
        ), section


@dataclass
class Deployed:
    """The ingress and a worker running as child processes with the definitions' users."""

    loaded: Loaded
    ingress_url: str
    ledger_url: str
    operator: Settings
    http: aiohttp.ClientSession
    test_channel: aio_pika.abc.AbstractChannel

    async def post(self, provider: str, body: bytes, headers: dict[str, str]) -> int:
        async with self.http.post(
            f"{self.ingress_url}/webhooks/{provider}", data=body, headers=headers
        ) as response:
            await response.read()
            return response.status

    async def depth(self, queue: str) -> int:
        return await queue_depth(self.test_channel, queue)

    async def wait_depth(self, queue: str, expected: int, within: float = 15.0) -> None:
        async def reached() -> bool:
            return await self.depth(queue) == expected

        await wait_until(reached, within=within, interval=0.1, what=f"{queue} at {expected}")

    async def operator_runs(self, *args: str) -> str:
        """`hookpipe ARGS` as the operator; its stdout, failing the test on a non-zero exit."""
        code, out, err = await _run_hookpipe(self.operator, *args)
        assert code == 0, f"hookpipe {' '.join(args)} exited {code}: {err}"
        return out

    async def operator_lists(self) -> list[dict[str, Any]]:
        """`hookpipe dlq list --json` as the operator: each queue's name and message count."""
        out = await self.operator_runs("dlq", "list", "--json")
        lines = [orjson.loads(line) for line in out.splitlines()]
        return [{"dlq": line["dlq"], "messages": line["messages"]} for line in lines]

    async def payment_status(self, provider: str, payment_id: str) -> str | None:
        ledger = await Ledger.open(self.ledger_url)
        try:
            payment = await ledger.get(provider, payment_id)
        finally:
            await ledger.close()
        return None if payment is None else payment.status


@pytest.fixture
async def deployed(
    job_declared: Loaded, tmp_path: Path, dreamclass_fake: FakeDreamClass
) -> AsyncIterator[Deployed]:
    """`hookpipe ingress` as the ingress user and `hookpipe worker` as the worker user, on the
    topology the operator declared; the DreamClass API is the fake."""
    await _empty_queues(job_declared)
    ledger = tmp_path / "ledger.sqlite3"
    port = free_port()
    ingress_settings = _production_settings(job_declared, "ingress", ledger)
    # No circuit breaker: each attempt's calls reach the fake, which decides how they end.
    worker_settings = dreamclass_fake.settings(
        _production_settings(job_declared, "worker", ledger), api_breaker_failures=0
    )
    processes = [
        HookpipeProcess(
            ingress_settings,
            tmp_path / "ingress.log",
            *("ingress", "--host", "127.0.0.1", "--port", str(port)),
        ),
        HookpipeProcess(worker_settings, tmp_path / "worker.log", "worker"),
    ]
    async with (
        aiohttp.ClientSession() as http,
        await _connect(job_declared.test_url) as test_connection,
    ):
        try:
            for process in processes:
                await process.start()
            test_channel = await test_connection.channel()
            result = Deployed(
                job_declared,
                f"http://127.0.0.1:{port}",
                f"sqlite:///{ledger}",
                _production_settings(job_declared, "operator", ledger),
                http,
                test_channel,
            )
            await _wait_ready(result, processes)
            yield result
        finally:
            for process in processes:
                await process.ensure_gone()


async def _wait_ready(deployed: Deployed, processes: list[HookpipeProcess]) -> None:
    async def ingress_ready() -> bool:
        try:
            async with deployed.http.get(f"{deployed.ingress_url}/readyz") as response:
                return response.status == 200 and (await response.json())["status"] == "ready"
        except aiohttp.ClientConnectionError:
            return False

    async def worker_consuming() -> bool:
        underlay = await deployed.test_channel.get_underlay_channel()
        declared = await underlay.queue_declare(handled_queues()[-1], passive=True)
        return bool(declared.consumer_count)

    for condition, what in ((ingress_ready, "the ingress ready"), (worker_consuming, "a worker")):
        try:
            await wait_until(condition, within=20, interval=0.1, what=what)
        except AssertionError:
            logs = "\n".join(p.log_path.read_text() for p in processes if p.log_path.exists())
            raise AssertionError(f"{what} did not come up; the logs:\n{logs}") from None


async def test_a_handled_webhook_is_applied_with_the_production_users(
    deployed: Deployed,
) -> None:
    body, headers = signed("jodo")

    assert await deployed.post("jodo", body, headers) == 200

    async def applied() -> bool:
        return await deployed.payment_status("jodo", "order_12343532424") == "paid"

    await wait_until(applied, within=15, interval=0.1, what="the Jodo payment in the ledger")


async def test_an_unroutable_webhook_lands_in_hookpipe_unrouted(deployed: Deployed) -> None:
    # An event type no queue is bound for: the broker routes it to the alternate exchange,
    # which the ingress user must be allowed to write to, or it is confirmed and dropped.
    body = fixture_bytes("jodo.order.payment.debited.json").replace(
        b'"order.payment.debited"', b'"order.payment.something_new"'
    )
    from tests.conftest import JODO_SECRET

    assert await deployed.post("jodo", body, jodo_signature(body, JODO_SECRET)) == 200

    await deployed.wait_depth(c.UNROUTED_QUEUE, 1)

    # The operator sees it beside the DLQs, and may purge it.
    assert {"dlq": c.UNROUTED_QUEUE, "messages": 1} in await deployed.operator_lists()
    await deployed.operator_runs("dlq", "purge", "--queue", c.UNROUTED_QUEUE, "--yes")
    assert await deployed.depth(c.UNROUTED_QUEUE) == 0


async def test_a_failing_webhook_is_retried_dead_lettered_and_the_operator_replays_it(
    deployed: Deployed, dreamclass_fake: FakeDreamClass
) -> None:
    queue = "dreamclass.PAYMENT_CREATED"
    dlq = queue + c.DLQ_SUFFIX
    dreamclass_fake.add_payment(16, 5, amount="300.00", status=1)
    # Both attempts find the API down: a retry through hookpipe.retry, then a dead letter
    # through hookpipe.dlx, each a publish of the worker user.
    dreamclass_fake.script("invoice", status=503, times=2 * API_TRIES)

    assert await deployed.post("dreamclass", dreamclass_body(), {}) == 200
    await deployed.wait_depth(dlq, 1)
    assert len(dreamclass_fake.requests_of("invoice")) == 2 * API_TRIES

    assert {"dlq": dlq, "messages": 1} in await deployed.operator_lists()
    shown = orjson.loads(await deployed.operator_runs("dlq", "show", "--queue", dlq, "--json"))
    assert shown["message_id"] == "dreamclass:214fb720-2248-44e0-9bfd-72171f9e72de"
    assert shown["attempts"] == 2

    # The API is back: the operator replays, the worker applies it.
    await deployed.operator_runs("dlq", "replay", "--queue", dlq)

    async def applied() -> bool:
        return await deployed.payment_status("dreamclass", "5") == "paid"

    await wait_until(applied, within=15, interval=0.1, what="the replayed payment applied")
    assert await deployed.depth(dlq) == 0


async def test_the_operator_purges_a_dead_letter(
    deployed: Deployed, dreamclass_fake: FakeDreamClass
) -> None:
    dlq = "dreamclass.PAYMENT_CREATED" + c.DLQ_SUFFIX
    dreamclass_fake.script("invoice", status=503, times=2 * API_TRIES)
    assert await deployed.post("dreamclass", dreamclass_body(), {}) == 200
    await deployed.wait_depth(dlq, 1)

    await deployed.operator_runs("dlq", "purge", "--queue", dlq, "--yes")

    assert await deployed.depth(dlq) == 0
