"""`hookpipe worker`'s arguments, and the metrics server it runs."""

from __future__ import annotations

import aiohttp
import pytest

from hookpipe.cli import main
from hookpipe.providers import handled_queues
from hookpipe.workers.command import select_queues
from hookpipe.workers.metrics import WorkerMetrics, bound_port, start_metrics_server


def test_default_is_every_handled_queue() -> None:
    assert select_queues([], []) == handled_queues()


def test_provider_selects_its_queues() -> None:
    assert select_queues([], ["jodo"]) == (
        "jodo.order.payment.debited",
        "jodo.direct.payment.cancelled",
    )


def test_queues_and_providers_add_up() -> None:
    chosen = select_queues(["rapyd.INVOICE_PAYMENT_CREATED"], ["dreamclass"])
    assert chosen == (
        "dreamclass.PAYMENT_CREATED",
        "dreamclass.PAYMENT_UPDATED",
        "dreamclass.PAYMENT_DELETED",
        "rapyd.INVOICE_PAYMENT_CREATED",
    )


def test_unknown_queue_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"not a handled queue: jodo\.nope"):
        select_queues(["jodo.order.payment.debited", "jodo.nope"], [])


def test_unknown_queue_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--queue", "jodo.order.payment.debited.dlq"]) == 2
    err = capsys.readouterr().err
    assert "not a handled queue: jodo.order.payment.debited.dlq" in err
    assert "jodo.direct.payment.cancelled" in err  # it says which queues there are


def test_unknown_provider_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--provider", "paypal"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'paypal'" in capsys.readouterr().err


def test_concurrency_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--concurrency", "0"])
    assert exit_info.value.code == 2
    assert "--concurrency" in capsys.readouterr().err


async def test_metrics_server_exposes_the_worker_metrics() -> None:
    metrics = WorkerMetrics()
    metrics.processed.labels("jodo.order.payment.debited").inc(3)
    metrics.end_to_end_seconds.labels("jodo.order.payment.debited").observe(0.02)
    runner = await start_metrics_server(metrics, 0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{bound_port(runner)}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            text = await response.text()
    finally:
        await runner.cleanup()
    assert 'hookpipe_worker_processed_total{queue="jodo.order.payment.debited"} 3.0' in text
    assert 'hookpipe_end_to_end_seconds_count{queue="jodo.order.payment.debited"} 1.0' in text
    assert "# TYPE hookpipe_worker_dead_lettered_total counter" in text
    assert "process_resident_memory_bytes" in text
