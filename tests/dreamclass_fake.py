"""A local aiohttp server that plays the DreamClass API (GetInvoice, GetPaymentMethods).

It serves the invoices and payment methods a test gives it, checks the API key, records every
request it gets, and can be told to misbehave first: answer 500 or 429 (with Retry-After), 404,
or answer too slowly. Use the `dreamclass_fake` fixture; it starts the server on an ephemeral port
and stops it after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hookpipe.ingress.dreamclass import DreamClassSettings
from hookpipe.settings import Settings

API_KEY = "dreamclass-api-test-key"
TENANT = "my-school"

Kind = Literal["invoice", "payment_methods"]

# DreamClass's own ids for its standard payment methods (PayInvoice's docs list them).
STANDARD_PAYMENT_METHODS: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "Cash", "logOnlyPaymentMethod": True},
    {"id": 2, "name": "Bank Transfer", "logOnlyPaymentMethod": True},
    {"id": 3, "name": "Online", "logOnlyPaymentMethod": False},
    {"id": 4, "name": "Check", "logOnlyPaymentMethod": True},
)


@dataclass(frozen=True)
class Recorded:
    """One request the fake got."""

    kind: Kind
    path: str
    headers: Mapping[str, str]
    at: float  # the event loop's clock when it arrived


@dataclass(frozen=True)
class Scripted:
    """An answer given instead of the normal one."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (then the normal answer, if status is 200)


class FakeDreamClass:
    """The fake API's state: what it serves, what it was asked, what it will do next."""

    def __init__(self) -> None:
        self.url = ""  # set once the server listens
        self.invoices: dict[int, dict[str, Any]] = {}
        self.payment_methods: list[dict[str, Any]] = [dict(m) for m in STANDARD_PAYMENT_METHODS]
        self.requests: list[Recorded] = []
        self._scripts: dict[Kind, deque[Scripted]] = {
            "invoice": deque(),
            "payment_methods": deque(),
        }
        self._closing = asyncio.Event()
        defaults = DreamClassSettings()
        self.app = web.Application()
        # aiohttp's route placeholders and the settings' path placeholders share one syntax.
        self.app.router.add_get(defaults.api_invoice_path, self._invoice)
        self.app.router.add_get(defaults.api_payment_methods_path, self._methods)

    def settings(self, base: Settings, **changes: Any) -> Settings:
        """`base` pointed at this fake, with its API key; changes to DreamClassSettings on top."""
        return base.with_section(DreamClassSettings, api_url=self.url, api_key=API_KEY, **changes)

    def add_invoice(
        self, invoice_id: int, *, currency: str | None = "EUR", **fields: Any
    ) -> dict[str, Any]:
        """An invoice with no payments yet; returns its JSON object, to change at will."""
        invoice: dict[str, Any] = {
            "id": invoice_id,
            "invoiceNumber": f"INV-{invoice_id:05d}",
            "payments": [],
            **fields,
        }
        if currency is not None:
            invoice["currency"] = currency
        self.invoices[invoice_id] = invoice
        return invoice

    def add_payment(
        self,
        invoice_id: int,
        payment_id: int,
        *,
        amount: str | int = "300.00",
        status: int | None = 1,
        method_id: int = 1,
        created_at: str = "2024-10-02T16:08:33.387+00:00",
        **fields: Any,
    ) -> dict[str, Any]:
        """A payment on an invoice (made if missing); returns its JSON object."""
        invoice = self.invoices.get(invoice_id) or self.add_invoice(invoice_id)
        payment: dict[str, Any] = {
            "id": payment_id,
            "amount": amount,
            "createdAt": created_at,
            "paymentmethod": {"id": method_id},
            "publicNotes": "Paid at the front desk",
            **fields,
        }
        if status is not None:
            payment["status"] = status
        invoice["payments"] = [p for p in invoice["payments"] if p["id"] != payment_id]
        invoice["payments"].append(payment)
        return payment

    def script(
        self,
        kind: Kind,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next `times` requests of that kind get this answer instead of the normal one."""
        for _ in range(times):
            self._scripts[kind].append(Scripted(status, dict(headers or {}), delay))

    def requests_of(self, kind: Kind) -> list[Recorded]:
        """The requests of one kind, oldest first."""
        return [r for r in self.requests if r.kind == kind]

    def stop_waiting(self) -> None:
        """Let every slow answer finish now, so that the server can close at once."""
        self._closing.set()

    async def _answer(self, kind: Kind, request: web.Request) -> web.Response | None:
        """Record the request; the scripted answer if one is due, else None for the normal one."""
        self.requests.append(
            Recorded(kind, request.path, dict(request.headers), asyncio.get_running_loop().time())
        )
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if not self._scripts[kind]:
            return None
        scripted = self._scripts[kind].popleft()
        if scripted.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), scripted.delay)
        if scripted.status == 200:
            return None
        return web.json_response(
            {"error": f"scripted {scripted.status}"},
            status=scripted.status,
            headers=scripted.headers,
        )

    async def _invoice(self, request: web.Request) -> web.Response:
        scripted = await self._answer("invoice", request)
        if scripted is not None:
            return scripted
        invoice = self.invoices.get(int(request.match_info["invoice_id"]))
        if invoice is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(invoice)

    async def _methods(self, request: web.Request) -> web.Response:
        scripted = await self._answer("payment_methods", request)
        if scripted is not None:
            return scripted
        return web.json_response(self.payment_methods)


@pytest.fixture
async def dreamclass_fake() -> AsyncIterator[FakeDreamClass]:
    """A running fake DreamClass API on an ephemeral port, stopped after the test."""
    fake = FakeDreamClass()
    server = TestServer(fake.app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        fake.stop_waiting()
        await server.close()
