"""The registry of providers: what it derives, and each built-in provider's description against
its own authenticator, examples and handlers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from importlib import metadata

import pytest

from hookpipe import providers
from hookpipe.ingress import simulate
from hookpipe.ingress.errors import SimulationError
from hookpipe.providers import HandlerContext, ProviderError
from hookpipe.settings import Settings
from hookpipe.workers.ledger import Ledger
from tests.handler_support import ledger as ledger  # the fixture

BUILT_IN = ("jodo", "dreamclass", "rapyd", "flexprice")


def test_the_built_in_providers_are_registered_in_order() -> None:
    assert providers.names()[: len(BUILT_IN)] == BUILT_IN


def test_handled_queues_are_each_providers_events_under_its_name() -> None:
    queues = providers.handled_queues()
    assert len(queues) == len(set(queues))
    for provider in providers.providers().values():
        assert provider.queues == tuple(f"{provider.name}.{e}" for e in provider.events)
        assert set(provider.queues) <= set(queues)
    assert "jodo.order.payment.debited" in queues
    assert "flexprice.payment.success" in queues


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_example_signed_by_the_provider_is_accepted_by_its_authenticator(
    name: str, test_settings: Settings
) -> None:
    provider = providers.get(name)
    assert provider is not None
    authenticator = provider.build_authenticator(test_settings)
    assert provider.example_events()
    for event in provider.example_events():
        webhook = simulate.build(test_settings, name, event, fresh=True, now=1_800_000_000)
        envelope = authenticator.authenticate(
            webhook.body, webhook.headers, "127.0.0.1", 1_800_000_000
        )
        assert envelope.event_type == event


@pytest.mark.parametrize("name", BUILT_IN)
def test_an_unconfigured_provider_names_the_variables_it_misses(name: str) -> None:
    provider = providers.get(name)
    assert provider is not None
    settings = Settings()
    assert not provider.configured(settings)
    missing = provider.missing(settings)
    assert missing and all(v.startswith(f"HOOKPIPE_{name.upper()}_") for v in missing)
    with pytest.raises(SimulationError, match=missing[0]):
        simulate.build(settings, name, provider.example_events()[0])


def test_simulate_names_the_examples_there_are(test_settings: Settings) -> None:
    with pytest.raises(SimulationError, match="PAYMENT_CREATED, PAYMENT_DELETED"):
        simulate.build(test_settings, "dreamclass", "NO_SUCH_EVENT")


async def test_handlers_that_do_not_match_the_events_are_refused(
    ledger: Ledger, test_settings: Settings
) -> None:
    jodo = providers.get("jodo")
    assert jodo is not None
    lying = dataclasses.replace(jodo, events=("order.payment.debited",))
    async with AsyncExitStack() as stack:
        with pytest.raises(ProviderError, match="handlers for"):
            lying.build_handlers(HandlerContext(test_settings, ledger, stack))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Makes the registry see these entry points as installed plugins; rebuilt afterwards."""

    def install(*found: metadata.EntryPoint) -> None:
        def entry_points(*, group: str) -> tuple[metadata.EntryPoint, ...]:
            return found if group == providers.ENTRY_POINT_GROUP else ()

        monkeypatch.setattr(metadata, "entry_points", entry_points)
        providers.providers.cache_clear()

    yield install
    monkeypatch.undo()
    providers.providers.cache_clear()


def _entry_point(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name, value, providers.ENTRY_POINT_GROUP)


def test_a_plugin_that_cannot_load_stops_with_one_line(installed: Callable[..., None]) -> None:
    installed(_entry_point("broken", "no_such_module:PROVIDER"))
    with pytest.raises(ProviderError, match=r"plugin .broken.*cannot be loaded") as caught:
        providers.providers()
    assert "\n" not in str(caught.value)


def test_a_plugin_may_not_take_a_built_in_name(installed: Callable[..., None]) -> None:
    installed(_entry_point("clash", "hookpipe.ingress.jodo:PROVIDER"))
    with pytest.raises(ProviderError, match="'jodo' exists already"):
        providers.providers()


def test_a_plugin_must_give_a_provider(installed: Callable[..., None]) -> None:
    installed(_entry_point("wrong", "hookpipe.ingress.jodo:NAME"))
    with pytest.raises(ProviderError, match=r"is not a hookpipe\.providers\.Provider"):
        providers.providers()
