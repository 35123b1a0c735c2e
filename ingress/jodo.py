"""Jodo: `X-Jodo-Signature` is the lowercase hex HMAC-SHA256 of the raw body, keyed by the secret.

The body's `timestamp` is signed with it, but Jodo does not say how long it retries, so its age is
not checked unless HOOKPIPE_JODO_MAX_AGE says so. A replayed webhook otherwise passes: the
ingress's replay guard and the workers' deduplication on `event_id` hold it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from hookpipe import values
from hookpipe.ingress.auth import hmac_sha256_hex, matches_any, required
from hookpipe.ingress.envelope import Envelope, decode
from hookpipe.ingress.errors import AuthenticationFailed
from hookpipe.ingress.example import with_fields
from hookpipe.providers import Provider, SignedWebhook
from hookpipe.schemas.jodo import DIRECT_PAYMENT_CANCELLED, ORDER_PAYMENT_DEBITED, envelope_decoder
from hookpipe.settings import Settings, secret_list, setting
from hookpipe.values import IPNetwork

NAME: Final = "jodo"
SIGNATURE_HEADER: Final = "X-Jodo-Signature"

_HEX_DIGEST = re.compile("[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class JodoSettings:
    ENV_PREFIX: ClassVar[str] = "HOOKPIPE_JODO_"

    secrets: tuple[str, ...] = setting(
        (),
        secret_list,
        env="HOOKPIPE_JODO_SECRET",
        secret=True,
        help="Jodo signing secret(s), comma-separated for rotation",
    )
    allowed_ips: tuple[IPNetwork, ...] = setting(
        (),
        values.networks,
        shown_default="empty (any)",
        help="optional comma-separated CIDR allow-list of Jodo's addresses",
    )
    max_age: float = setting(
        0.0,
        values.non_negative_float,
        shown_default="`0` (off)",
        help="seconds a Jodo webhook's signed `timestamp` may lie in the past (0: any age); "
        "Jodo's own retries must fit in it",
    )


class Jodo:
    """Verifies Jodo webhooks against every configured secret (rotation) and the IP allow-list."""

    name: Final = NAME

    def __init__(self, settings: Settings) -> None:
        own = settings.section(JodoSettings)
        self._keys = tuple(secret.encode() for secret in own.secrets)
        self._allowed = own.allowed_ips
        self._max_age = own.max_age

    def authenticate(
        self, body: bytes, headers: Mapping[str, str], peer: str | None, now: float
    ) -> Envelope:
        """Check the peer and the signature on the raw bytes, then read event_id and event.

        The peer is the TCP peer (`request.remote`): behind a proxy or load balancer that is the
        proxy, so the allow-list must then hold the proxy's addresses, or be left empty.
        """
        if self._allowed and not peer_allowed(peer, self._allowed):
            raise AuthenticationFailed("ip not allowed")
        provided = required(headers.get(SIGNATURE_HEADER), "signature")
        if _HEX_DIGEST.fullmatch(provided) is None:
            raise AuthenticationFailed("malformed signature")
        candidate = provided.lower().encode("ascii")
        if not matches_any(candidate, (hmac_sha256_hex(key, body) for key in self._keys)):
            raise AuthenticationFailed("signature mismatch")
        envelope = decode(envelope_decoder, body)
        if self._max_age:
            # The timestamp is in the signed body: an old webhook sent again is refused.
            if envelope.timestamp is None:
                raise AuthenticationFailed("missing timestamp")
            if envelope.timestamp < now - self._max_age:
                raise AuthenticationFailed("timestamp too old")
        return Envelope(envelope.event_id, envelope.event)


def peer_allowed(peer: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether the peer address is in one of the networks (an IPv4-mapped IPv6 counts as IPv4)."""
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def sign(body: bytes, secret: str) -> dict[str, str]:
    """The headers Jodo would send with `body`."""
    return {SIGNATURE_HEADER: hmac_sha256_hex(secret.encode(), body).decode("ascii")}


def sign_example(
    settings: Settings, event: str, body: bytes, *, fresh: bool = False, now: float = 0.0
) -> SignedWebhook:
    """An example webhook as Jodo would send it, signed with the first configured secret."""
    if fresh:
        body = with_fields(body, event_id=str(uuid.uuid4()))
    return SignedWebhook(body, sign(body, settings.section(JodoSettings).secrets[0]))


PROVIDER: Final = Provider(
    name=NAME,
    events=(ORDER_PAYMENT_DEBITED, DIRECT_PAYMENT_CANCELLED),
    required=("secrets",),
    settings_section=JodoSettings,
    authenticator=Jodo,
    handlers="hookpipe.workers.handlers.jodo:handlers",
    sign=sign_example,
    examples="hookpipe.seeds",
)
