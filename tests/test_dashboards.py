"""deploy/grafana and deploy/prometheus: the rules pass promtool, their unit tests pass, and every
metric the dashboard and the rules query is one that hookpipe or RabbitMQ really exports.

hookpipe's names are collected by rendering what the real processes serve: an ingress app's
/metrics, a worker's metrics, a `hookpipe dlq exporter` after a scan. RabbitMQ's are the plugin's
documented names (RABBITMQ_NAMES), checked against the local broker's plugin when it runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import aio_pika
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hookpipe.settings import Settings
from hookpipe.workers.dlq_exporter import DlqExporter
from hookpipe.workers.metrics import WorkerMetrics
from hookpipe.workers.runtime import Worker
from tests.ingress_support import StartIngress
from tests.worker_support import wait_until

pytest_plugins = ("tests.ingress_fixtures",)

ROOT: Final = Path(__file__).parent.parent
PROMETHEUS: Final = ROOT / "deploy" / "prometheus"
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "hookpipe.json"

# rabbitmq_prometheus's /metrics/detailed?family=queue_coarse_metrics&family=queue_consumer_count
# (RabbitMQ 3.10 and later), labels vhost and queue. The dashboard and the rules use these only.
RABBITMQ_NAMES: Final = frozenset(
    {
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_consumers",
    }
)
RABBITMQ_DETAILED_URL: Final = (
    "http://127.0.0.1:15692/metrics/detailed?family=queue_coarse_metrics"
    "&family=queue_consumer_count"
)
# Series Prometheus makes itself.
PROMETHEUS_NAMES: Final = frozenset({"up"})

# What a family of each type is queried by.
_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) where it is missing: the rules would go unchecked."""
    # On PATH, or where `make test` unpacks it: beside the virtual environment's Python.
    found = shutil.which(
        "promtool", path=f"{os.environ.get('PATH', '')}:{Path(sys.executable).parent}"
    )
    if found is None:
        pytest.fail(
            "promtool is not on PATH: it checks deploy/prometheus (Debian and Ubuntu: "
            "apt-get install prometheus; or a release from prometheus.io/download)"
        )
    return subprocess.run(
        [found, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# --- promtool --------------------------------------------------------------------------------


def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_configuration_passes_promtool_check() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool has no command to parse one expression; as recording rules, they are parsed.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": _concrete(expr)}
                    for n, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- names -----------------------------------------------------------------------------------


@pytest.fixture
async def exported(
    broker: aio_pika.abc.AbstractChannel,
    start_ingress: StartIngress,
    test_settings: Settings,
    tmp_path: Path,
) -> frozenset[str]:
    """Every series name hookpipe's processes serve, rendered by the real ones."""
    settings = dataclasses.replace(test_settings, spool_dir=str(tmp_path / "spool"))
    ingress = await start_ingress(settings)
    response = await ingress.client.get("/metrics")
    assert response.status == 200
    texts = [await response.text(), WorkerMetrics().render().decode()]
    exporter = DlqExporter(test_settings)
    await exporter.scan()
    texts.append(exporter.render().decode())
    return frozenset(name for text in texts for name in series_names(text))


async def test_the_dashboard_queries_only_exported_metrics(exported: frozenset[str]) -> None:
    known = exported | RABBITMQ_NAMES | PROMETHEUS_NAMES
    used = {name for expr in dashboard_queries() for name in metric_names(expr)}

    assert used - known == set()
    # The panels the dashboard is for: each of these is looked at.
    for name in (
        "hookpipe_ingress_requests_total",
        "hookpipe_ingress_publish_seconds_bucket",
        "hookpipe_end_to_end_seconds_bucket",
        "hookpipe_worker_retried_total",
        "hookpipe_worker_dead_lettered_total",
        "hookpipe_ingress_spool_depth",
        "hookpipe_ingress_spool_oldest_age_seconds",
        "hookpipe_dlq_oldest_age_seconds",
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_consumers",
    ):
        assert name in used, name


async def test_the_alert_rules_query_only_exported_metrics(exported: frozenset[str]) -> None:
    known = exported | RABBITMQ_NAMES | PROMETHEUS_NAMES
    used = {name for expr in alert_queries() for name in metric_names(expr)}

    assert used - known == set()
    assert "hookpipe_worker_broker_connected" in used


def test_the_documented_rabbitmq_names_are_what_the_plugin_exports() -> None:
    try:
        with urllib.request.urlopen(RABBITMQ_DETAILED_URL, timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        # make test enables it on a local broker (scripts/ensure-services.sh).
        pytest.fail(
            f"rabbitmq_prometheus does not answer on 127.0.0.1:15692 ({exc}); "
            "rabbitmq-plugins enable rabbitmq_prometheus"
        )
    assert RABBITMQ_NAMES - set(series_names(text)) == set()


def test_the_name_finder_sees_through_promql() -> None:
    expr = (
        'sum by (queue, le) (rate(a_total{queue=~"x|y", le!="1"}[5m])) / on (queue) b'
        " > 1e-3 or absent(c) and time() - d offset 5m"
    )
    assert metric_names(expr) == {"a_total", "b", "c", "d"}


# --- connection state ------------------------------------------------------------------------


async def test_the_ingress_says_when_it_is_connected(
    broker: aio_pika.abc.AbstractChannel, start_ingress: StartIngress
) -> None:
    ingress = await start_ingress()

    response = await ingress.client.get("/metrics")

    assert "hookpipe_ingress_broker_connected 1.0" in await response.text()


async def test_a_worker_says_when_it_is_connected(
    broker: aio_pika.abc.AbstractChannel, test_settings: Settings
) -> None:
    async def handler(_: object) -> None:
        return None

    worker = Worker(test_settings, {"jodo.order.payment.debited": handler})

    def connected() -> float | None:
        return worker.metrics.registry.get_sample_value("hookpipe_worker_broker_connected")

    assert connected() == 0
    async with worker:
        await wait_until(lambda: connected() == 1, what="connected")
    assert connected() == 0


# --- helpers ---------------------------------------------------------------------------------


def series_names(text: str) -> Iterator[str]:
    """The series names a text exposition can hold, whether or not it has samples yet."""
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            yield family.name + suffix
        for sample in family.samples:
            yield sample.name


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        token = match.group()
        if expr[match.end() :].lstrip().startswith("(") or token.lower() in _KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(token)
    return names


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its variables'."""
    dashboard: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    queries = [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else None
        if variable["type"] == "query" and isinstance(text, str):
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert found, f"variable {variable['name']}: not label_values(metric, label)"
            queries.append(found.group(1))
    assert queries
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _concrete(expr: str) -> str:
    """A dashboard query with Grafana's variables as a user would have them."""
    return (
        expr.replace("$__rate_interval", "5m").replace("$vhost", "hookpipe").replace("$queue", ".*")
    )
