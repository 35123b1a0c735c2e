"""The registry of providers: one typed description each, from which everything else is derived.

The ingress's routes and authenticators, the handled queues and the topology, the worker's handler
table, `hookpipe simulate` and the list of providers the commands accept all come from here. A
provider that ships with hookpipe is one line of BUILTIN; one from another installed distribution
names its description in the entry-point group ENTRY_POINT_GROUP (docs/providers.md, "Adding a
provider").
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import TYPE_CHECKING, Any, Final, Protocol

from hookpipe.errors import HookpipeError

if TYPE_CHECKING:
    from hookpipe.ingress.envelope import Envelope
    from hookpipe.settings import Settings
    from hookpipe.workers.handlers.base import Handler
    from hookpipe.workers.ledger import Ledger

# Modules of the providers that ship with hookpipe, each holding its description as PROVIDER.
BUILTIN: Final = (
    "hookpipe.ingress.jodo",
    "hookpipe.ingress.dreamclass",
    "hookpipe.ingress.rapyd",
    "hookpipe.ingress.flexprice",
)
# Installed distributions add providers here: `name = "module:ATTRIBUTE"`, a Provider.
ENTRY_POINT_GROUP: Final = "hookpipe.providers"


class ProviderError(HookpipeError):
    """A provider's description is wrong or cannot be loaded; the message says which and why."""


class Authenticator(Protocol):
    """One provider's webhook authentication, built once from the settings."""

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Verify the request on the raw bytes, then read the event id and type.

        Raises AuthenticationFailed (401) or InvalidEnvelope (400).
        """
        ...


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    """A webhook ready to POST: the exact body and the headers its provider would send."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """What a provider's handlers are built with: the settings, the ledger, and an exit stack on
    which a resource they open (an API client) is closed when the worker stops."""

    settings: Settings
    ledger: Ledger
    resources: AsyncExitStack


# sign(settings, event type, example body, fresh=..., now=...): the webhook as the provider
# would send it; with fresh=True it gets a new event id.
Signer = Callable[..., SignedWebhook]
# A value, or "module:attribute" naming it: the workers' side of a provider is imported only by
# the commands that run handlers, so `hookpipe payments` does not load an API client.
Ref = str | Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider, as everything in hookpipe sees it."""

    # The path segment of its route (/webhooks/{name}) and the first part of its routing keys.
    name: str
    # The event types it handles, as the provider writes them: each is one quorum queue named
    # "{name}.{event type}". Other types are accepted and land in hookpipe.unrouted.
    events: tuple[str, ...]
    # Settings its authentication needs: field names of `settings_section` (of Settings when it
    # is None). Until each is set, the provider accepts nothing.
    required: tuple[str, ...]
    # Settings -> Authenticator.
    authenticator: Ref
    # HandlerContext -> {queue name: Handler}, one per event type.
    handlers: Ref
    # The Signer of test webhooks and `hookpipe simulate`.
    sign: Ref
    # A package holding example bodies named "{name}.{event type}.json".
    examples: str
    # Events whose example is another event's body (the signer sets the type).
    example_aliases: Mapping[str, str] = field(default_factory=dict)
    # Its settings class, declared with hookpipe.settings.setting: read from the environment
    # with the rest, reached with settings.section(cls).
    settings_section: type | None = None

    @property
    def queues(self) -> tuple[str, ...]:
        """Its handled queues, named by their routing keys."""
        return tuple(f"{self.name}.{event}" for event in self.events)

    def configured(self, settings: Settings) -> bool:
        """Whether every setting its authentication needs is set; otherwise it accepts nothing."""
        source = self._settings_of(settings)
        return all(getattr(source, name) for name in self.required)

    def missing(self, settings: Settings) -> tuple[str, ...]:
        """The environment variables still to set before it accepts webhooks."""
        from hookpipe.settings import env_name

        source = self._settings_of(settings)
        kind = type(source)
        return tuple(env_name(kind, name) for name in self.required if not getattr(source, name))

    def build_authenticator(self, settings: Settings) -> Authenticator:
        factory: Callable[[Settings], Authenticator] = resolve(self.authenticator)
        return factory(settings)

    def build_handlers(self, context: HandlerContext) -> Mapping[str, Handler]:
        """Its handlers by queue; ProviderError unless there is one for each event type."""
        factory: Callable[[HandlerContext], Mapping[str, Handler]] = resolve(self.handlers)
        built = factory(context)
        if set(built) != set(self.queues):
            raise ProviderError(
                f"provider {self.name}: handlers for {sorted(built)}, "
                f"but its events make the queues {sorted(self.queues)}"
            )
        return built

    def signer(self) -> Signer:
        signer: Signer = resolve(self.sign)
        return signer

    def example(self, event: str) -> bytes | None:
        """The shipped example body of an event, verbatim; None if there is none."""
        folder = resources.files(self.examples)
        found = folder / f"{self.name}.{self.example_aliases.get(event, event)}.json"
        return found.read_bytes() if found.is_file() else None

    def example_events(self) -> tuple[str, ...]:
        """The events it has an example of."""
        prefix = f"{self.name}."
        shipped = (
            entry.name.removeprefix(prefix).removesuffix(".json")
            for entry in resources.files(self.examples).iterdir()
            if entry.name.startswith(prefix) and entry.name.endswith(".json")
        )
        return tuple(sorted({*shipped, *self.example_aliases}))

    def _settings_of(self, settings: Settings) -> Any:
        return (
            settings if self.settings_section is None else settings.section(self.settings_section)
        )


def resolve(ref: Ref) -> Any:
    """A Ref's value: itself, or the attribute its "module:attribute" names."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attribute = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ProviderError(f"cannot load {ref!r}: {exc}") from exc


@functools.cache
def providers() -> Mapping[str, Provider]:
    """Every provider, by name: the built-in ones, then those installed as plugins."""
    found: dict[str, Provider] = {}
    for module_name in BUILTIN:
        _add(found, resolve(f"{module_name}:PROVIDER"), module_name)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as exc:  # a broken plugin names itself instead of a traceback
            raise ProviderError(
                f"the provider plugin {entry_point.name!r} ({entry_point.value}) cannot be "
                f"loaded: {type(exc).__name__}: {exc}"
            ) from exc
        _add(found, loaded, f"entry point {entry_point.name!r} ({entry_point.value})")
    return found


def _add(found: dict[str, Provider], provider: object, origin: str) -> None:
    if not isinstance(provider, Provider):
        raise ProviderError(f"{origin} is not a hookpipe.providers.Provider")
    if provider.name in found:
        raise ProviderError(f"{origin}: a provider named {provider.name!r} exists already")
    if not provider.name.isidentifier() or not provider.name.islower():
        raise ProviderError(f"{origin}: a provider's name must be a lowercase identifier")
    found[provider.name] = provider


def names() -> tuple[str, ...]:
    """Every provider's name."""
    return tuple(providers())


def get(name: str) -> Provider | None:
    """The provider of that name, if there is one."""
    return providers().get(name)


def handled_queues() -> tuple[str, ...]:
    """Every handled queue, each named by its routing key "{provider}.{event type}"."""
    return tuple(queue for provider in providers().values() for queue in provider.queues)


def settings_sections() -> tuple[type, ...]:
    """The settings classes providers bring of their own, to be read with the rest."""
    return tuple(
        provider.settings_section
        for provider in providers().values()
        if provider.settings_section is not None
    )
