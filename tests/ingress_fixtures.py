"""Fixtures of the ingress tests: a test module uses them with
`pytest_plugins = ("tests.ingress_fixtures",)` (and imports nothing from here)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hookpipe.ingress.app import create_app
from hookpipe.ingress.server import server_options
from hookpipe.settings import Settings
from tests.ingress_support import Ingress, StartIngress


@pytest.fixture
async def start_ingress(test_settings: Settings) -> AsyncIterator[StartIngress]:
    """start(settings=None, clock=None, ready=True): an ingress, stopped after the test."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def start(
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] | None = None,
        ready: bool = True,
    ) -> Ingress:
        settings = settings or test_settings
        app = create_app(settings, **({} if clock is None else {"clock": clock}))
        server = TestServer(app)
        await server.start_server(**server_options(settings))
        client = TestClient(server)
        await client.start_server()
        started.append(client)
        ingress = Ingress(app, client)
        if ready:
            await ingress.wait_ready()
        return ingress

    try:
        yield start
    finally:
        for client in reversed(started):
            await client.close()


@pytest.fixture
async def ingress(
    broker: aio_pika.abc.AbstractChannel, start_ingress: StartIngress, test_settings: Settings
) -> Ingress:
    """An ingress with every provider configured, connected to the test vhost's empty queues.

    It leaves the topology to `broker`, which has just declared it from the same settings: the
    ingress's own declaration at start is tested by test_ingress_declares_the_topology_at_start.
    """
    return await start_ingress(dataclasses.replace(test_settings, declare_topology=False))


@pytest.fixture
async def refusing_ingress(start_ingress: StartIngress, test_settings: Settings) -> Ingress:
    """An ingress that neither declares nor purges anything: quicker, for tests of refusals."""
    return await start_ingress(dataclasses.replace(test_settings, declare_topology=False))
