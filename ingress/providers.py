"""The providers the ingress knows, and which of them this configuration accepts webhooks from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from hookpipe.ingress.dreamclass import DreamClass
from hookpipe.ingress.envelope import Envelope
from hookpipe.ingress.flexprice import Flexprice
from hookpipe.ingress.jodo import Jodo
from hookpipe.ingress.rapyd import Rapyd

from hookpipe.settings import Settings


class Provider(Protocol):
    """One provider's authentication, built once from the settings."""

    @property
    def name(self) -> str: ...

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Verify the request on the raw bytes, then read the event id and type.

        Raises AuthenticationFailed (401) or InvalidEnvelope (400).
        """
        ...


_FACTORIES: dict[str, Callable[[Settings], Provider]] = {
    "jodo": Jodo,
    "dreamclass": DreamClass,
    "rapyd": Rapyd,
    "flexprice": Flexprice,
}


def configured(settings: Settings) -> dict[str, Provider]:
    """The providers whose secrets are set, by name; the others accept nothing."""
    return {
        name: factory(settings)
        for name, factory in _FACTORIES.items()
        if settings.provider_configured(name)
    }


# What a provider that accepts nothing is missing, for the 404's message.
MISSING_SETTING: dict[str, str] = {
    "jodo": "HOOKPIPE_JODO_SECRET",
    "dreamclass": "HOOKPIPE_DREAMCLASS_SECRET",
    "rapyd": "HOOKPIPE_RAPYD_ACCESS_KEY, HOOKPIPE_RAPYD_SECRET_KEY and HOOKPIPE_RAPYD_WEBHOOK_URL",
    "flexprice": "HOOKPIPE_FLEXPRICE_SECRET",
}
