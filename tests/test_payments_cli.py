"""`hookpipe payments` run as a user runs it: a subprocess reading a real ledger."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookpipe.workers.handlers import jodo
from hookpipe.workers.ledger import Ledger, LedgerEvent, PaymentState
from tests.conftest import fixture_bytes
from tests.handler_support import delivery

HOOKPIPE = str(Path(sys.executable).parent / "hookpipe")
ORDER_ID = "order_12343532424"
DEBITED_ID = "45bb1387-2a83-4fdb-a149-e7dec81043f0"
CANCELLED_ID = "9c7ae52e-dad6-4dff-948e-cdfc2926cf7b"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.splitlines()]


async def hookpipe(ledger_url: str, *args: str) -> Result:
    """Run `hookpipe ARGS` with only this ledger configured.

    A test's reads of a filled ledger run side by side (asyncio.gather): each run is mostly Python
    starting. Not on a new SQLite file: two processes creating it at once may find it locked.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKPIPE_")}
    env |= {"HOOKPIPE_LEDGER_URL": ledger_url, "HOOKPIPE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        HOOKPIPE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@pytest.fixture
async def filled(ledger_url: str) -> str:
    """A ledger holding the two Jodo seeds and a pending Flexprice payment without amount."""
    async with await Ledger.open(ledger_url) as ledger:
        debited = fixture_bytes("jodo.order.payment.debited.json")
        cancelled = fixture_bytes("jodo.direct.payment.cancelled.json")
        queue = "jodo.order.payment.debited"
        await jodo.apply_order_payment_debited(ledger, delivery(queue, debited, DEBITED_ID))
        queue = "jodo.direct.payment.cancelled"
        await jodo.apply_direct_payment_cancelled(ledger, delivery(queue, cancelled, CANCELLED_ID))
        await ledger.apply(
            LedgerEvent("flexprice", "msg_1", "payment.pending", "pay_flex", None),
            lambda _: PaymentState(
                status="pending", amount=None, currency="USD", details={}, version=None
            ),
        )
    return ledger_url


async def test_show_json_prints_the_payment(filled: str) -> None:
    result = await hookpipe(filled, "payments", "show", "jodo", ORDER_ID, "--json")

    assert result.code == 0, result.err
    [shown] = result.json_lines()
    assert shown["provider"] == "jodo"
    assert shown["payment_id"] == ORDER_ID
    assert shown["status"] == "paid"
    assert shown["amount"] == "10000.0"  # exact, as a string
    assert Decimal(shown["amount"]) == Decimal("10000.0")
    assert shown["currency"] == "INR"
    assert shown["events"] == [DEBITED_ID]
    assert shown["version"] == 1691143279000
    assert shown["details"]["order"]["fee_components"] == [
        {"component_type": "Admission Fee", "amount": "10000.0"}
    ]
    assert shown["created_at"].endswith("Z") and shown["updated_at"].endswith("Z")


async def test_show_a_missing_payment_exits_1(filled: str) -> None:
    result = await hookpipe(filled, "payments", "show", "jodo", "order_nope", "--json")

    assert result.code == 1
    assert result.out == ""
    assert "no payment 'order_nope' of provider 'jodo'" in result.err


async def test_list_json_prints_one_object_per_line(filled: str) -> None:
    result = await hookpipe(filled, "payments", "list", "--json")

    assert result.code == 0, result.err
    listed = {(p["provider"], p["payment_id"]): p for p in result.json_lines()}
    assert set(listed) == {("jodo", ORDER_ID), ("jodo", "direct_3257"), ("flexprice", "pay_flex")}
    reversal = listed["jodo", "direct_3257"]
    assert (reversal["status"], reversal["amount"]) == ("reversed", "5000.0")
    assert reversal["events"] == [CANCELLED_ID]
    assert listed["flexprice", "pay_flex"]["amount"] is None


async def test_list_filters_and_limits(filled: str) -> None:
    jodo_only, reversed_, one = await asyncio.gather(
        hookpipe(filled, "payments", "list", "--provider", "jodo", "--json"),
        hookpipe(filled, "payments", "list", "--status", "reversed", "--json"),
        hookpipe(filled, "payments", "list", "--limit", "1", "--json"),
    )

    assert {p["payment_id"] for p in jodo_only.json_lines()} == {ORDER_ID, "direct_3257"}
    assert [p["payment_id"] for p in reversed_.json_lines()] == ["direct_3257"]
    assert [p["payment_id"] for p in one.json_lines()] == ["pay_flex"]  # the latest updated


async def test_list_and_show_without_json_are_readable(filled: str) -> None:
    table, block = await asyncio.gather(
        hookpipe(filled, "payments", "list"),
        hookpipe(filled, "payments", "show", "jodo", "direct_3257"),
    )

    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    columns = "PROVIDER  PAYMENT ID  STATUS  AMOUNT  CURRENCY  EVENTS  UPDATED"
    assert header.split() == columns.split()
    assert any(row.split()[:5] == ["jodo", ORDER_ID, "paid", "10000.0", "INR"] for row in rows)
    assert block.code == 0, block.err
    assert "status      reversed" in block.out
    assert "amount      5000.0 INR" in block.out
    assert CANCELLED_ID in block.out
    assert '"transaction_id": "tra_1234_Rarome1"' in block.out


async def test_an_empty_ledger_lists_nothing(ledger_url: str) -> None:
    await (await Ledger.open(ledger_url)).close()  # created, as a worker's first start does
    as_json = await hookpipe(ledger_url, "payments", "list", "--json")
    as_table = await hookpipe(ledger_url, "payments", "list")

    assert (as_json.code, as_json.out) == (0, "")
    assert (as_table.code, as_table.out.strip()) == (0, "no payments")


async def test_an_unreachable_ledger_exits_1_with_a_clear_message() -> None:
    with socket.socket() as bound:  # bound, not listening: connecting is refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/ledger"

        result = await hookpipe(url, "payments", "list")

    assert result.code == 1
    assert "cannot read the ledger: ledger unreachable" in result.err
    assert "s3cret" not in result.err
