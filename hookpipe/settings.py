"""One typed settings object, built once at start from the environment and passed down."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from hookpipe.errors import SettingsError

T = TypeVar("T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delayed-retry schedule: the n-th retry waits delays[n-1] seconds, give or take the jitter."""

    delays: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0)
    # Attempts in all, the first delivery included; past it a failing message is dead-lettered.
    max_attempts: int = 6
    # A fraction of each delay, added or removed at random so that a burst of failures spreads out.
    jitter: float = 0.2

    def delay_for(self, retry: int) -> float:
        """The base delay before retry number `retry` (1-based); the last delay repeats."""
        return self.delays[min(retry, len(self.delays)) - 1]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything hookpipe reads from its environment; see the README's settings table."""

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    ledger_url: str = "sqlite:///var/ledger.sqlite3"
    # PostgreSQL connections per worker process; a write holds one for two round trips only.
    ledger_pool_size: int = 10
    log_format: str = "auto"  # "json", "console", or "auto": console on a terminal, else JSON
    log_level: str = "info"

    jodo_secrets: tuple[str, ...] = ()
    jodo_allowed_ips: tuple[IPNetwork, ...] = ()

    dreamclass_secrets: tuple[str, ...] = ()
    # The docs leave open whether the key is the secret's text or base64 of raw key bytes.
    dreamclass_secret_encoding: str = "utf-8"  # or "base64"
    dreamclass_basic_auth: tuple[str, str] | None = None
    dreamclass_api_url: str | None = None
    dreamclass_api_key: str | None = None
    dreamclass_api_auth_header: str = "Authorization"
    dreamclass_api_auth_scheme: str = "Bearer"
    # The DreamClass API's own paths (docs/providers.md says how they were found).
    dreamclass_api_invoice_path: str = "/dreamclassapi/v1/financial/invoices/{invoice_id}"
    dreamclass_api_payment_methods_path: str = "/dreamclassapi/v1/financial/paymentmethods"
    dreamclass_api_timeout: float = 5.0
    dreamclass_payment_methods_ttl: float = 300.0

    rapyd_access_key: str | None = None
    rapyd_secret_key: str | None = None
    rapyd_webhook_url: str | None = None
    rapyd_tolerance: float = 300.0

    flexprice_secrets: tuple[bytes, ...] = ()
    flexprice_tolerance: float = 300.0

    # Off where least-privilege users may not declare: the topology comes from deploy/'s
    # definitions file, or from `hookpipe topology declare` run by an operator.
    declare_topology: bool = True
    max_body_bytes: int = 1_048_576
    publish_timeout: float = 5.0
    delivery_limit: int = 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    worker_concurrency: int = 32
    worker_metrics_port: int = 9101
    shutdown_grace: float = 20.0

    def provider_configured(self, provider: str) -> bool:
        """Whether a provider has what its signature check needs; otherwise it accepts nothing."""
        match provider:
            case "jodo":
                return bool(self.jodo_secrets)
            case "dreamclass":
                return bool(self.dreamclass_secrets)
            case "rapyd":
                return bool(
                    self.rapyd_access_key and self.rapyd_secret_key and self.rapyd_webhook_url
                )
            case "flexprice":
                return bool(self.flexprice_secrets)
        return False

    @property
    def dreamclass_api_configured(self) -> bool:
        return bool(self.dreamclass_api_url and self.dreamclass_api_key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from `environ` (default: the process environment).

        Raises SettingsError, whose message is one line naming the variable, on a malformed value.
        """
        env = _Env(os.environ if environ is None else environ)
        defaults = cls()
        retry_defaults = RetryPolicy()
        return cls(
            amqp_url=env.get("HOOKPIPE_AMQP_URL", defaults.amqp_url, _amqp_url),
            ledger_url=env.get("HOOKPIPE_LEDGER_URL", defaults.ledger_url, _ledger_url),
            ledger_pool_size=env.get(
                "HOOKPIPE_LEDGER_POOL_SIZE", defaults.ledger_pool_size, _positive_int
            ),
            log_format=env.get(
                "HOOKPIPE_LOG_FORMAT", defaults.log_format, _choice("auto", "json", "console")
            ),
            log_level=env.get(
                "HOOKPIPE_LOG_LEVEL",
                defaults.log_level,
                _choice("debug", "info", "warning", "error"),
            ),
            jodo_secrets=env.secrets("HOOKPIPE_JODO_SECRET"),
            jodo_allowed_ips=env.get("HOOKPIPE_JODO_ALLOWED_IPS", (), _networks),
            dreamclass_secrets=env.secrets("HOOKPIPE_DREAMCLASS_SECRET"),
            dreamclass_secret_encoding=env.get(
                "HOOKPIPE_DREAMCLASS_SECRET_ENCODING",
                defaults.dreamclass_secret_encoding,
                _choice("utf-8", "base64"),
            ),
            dreamclass_basic_auth=env.get(
                "HOOKPIPE_DREAMCLASS_BASIC_AUTH", None, _basic_auth, secret=True
            ),
            dreamclass_api_url=env.get("HOOKPIPE_DREAMCLASS_API_URL", None, _http_url),
            dreamclass_api_key=env.get("HOOKPIPE_DREAMCLASS_API_KEY", None, str, secret=True),
            dreamclass_api_auth_header=env.get(
                "HOOKPIPE_DREAMCLASS_API_AUTH_HEADER", defaults.dreamclass_api_auth_header, str
            ),
            dreamclass_api_auth_scheme=env.get(
                "HOOKPIPE_DREAMCLASS_API_AUTH_SCHEME", defaults.dreamclass_api_auth_scheme, str
            ),
            dreamclass_api_invoice_path=env.get(
                "HOOKPIPE_DREAMCLASS_API_INVOICE_PATH",
                defaults.dreamclass_api_invoice_path,
                _path_with("{invoice_id}"),
            ),
            dreamclass_api_payment_methods_path=env.get(
                "HOOKPIPE_DREAMCLASS_API_PAYMENT_METHODS_PATH",
                defaults.dreamclass_api_payment_methods_path,
                _path_with(None),
            ),
            dreamclass_api_timeout=env.get(
                "HOOKPIPE_DREAMCLASS_API_TIMEOUT", defaults.dreamclass_api_timeout, _positive_float
            ),
            dreamclass_payment_methods_ttl=env.get(
                "HOOKPIPE_DREAMCLASS_PAYMENT_METHODS_TTL",
                defaults.dreamclass_payment_methods_ttl,
                _non_negative_float,
            ),
            rapyd_access_key=env.get("HOOKPIPE_RAPYD_ACCESS_KEY", None, str, secret=True),
            rapyd_secret_key=env.get("HOOKPIPE_RAPYD_SECRET_KEY", None, str, secret=True),
            rapyd_webhook_url=env.get("HOOKPIPE_RAPYD_WEBHOOK_URL", None, _http_url),
            rapyd_tolerance=env.get(
                "HOOKPIPE_RAPYD_TOLERANCE", defaults.rapyd_tolerance, _positive_float
            ),
            flexprice_secrets=tuple(_svix_key(s) for s in env.secrets("HOOKPIPE_FLEXPRICE_SECRET"))
            if env.has("HOOKPIPE_FLEXPRICE_SECRET")
            else (),
            flexprice_tolerance=env.get(
                "HOOKPIPE_FLEXPRICE_TOLERANCE", defaults.flexprice_tolerance, _positive_float
            ),
            declare_topology=env.get("HOOKPIPE_DECLARE_TOPOLOGY", defaults.declare_topology, _bool),
            max_body_bytes=env.get(
                "HOOKPIPE_MAX_BODY_BYTES", defaults.max_body_bytes, _positive_int
            ),
            publish_timeout=env.get(
                "HOOKPIPE_PUBLISH_TIMEOUT", defaults.publish_timeout, _positive_float
            ),
            delivery_limit=env.get(
                "HOOKPIPE_DELIVERY_LIMIT", defaults.delivery_limit, _positive_int
            ),
            retry=RetryPolicy(
                delays=env.get("HOOKPIPE_RETRY_DELAYS", retry_defaults.delays, _delays),
                max_attempts=env.get(
                    "HOOKPIPE_MAX_ATTEMPTS", retry_defaults.max_attempts, _positive_int
                ),
                jitter=env.get("HOOKPIPE_RETRY_JITTER", retry_defaults.jitter, _fraction),
            ),
            worker_concurrency=env.get(
                "HOOKPIPE_WORKER_CONCURRENCY", defaults.worker_concurrency, _positive_int
            ),
            worker_metrics_port=env.get(
                "HOOKPIPE_WORKER_METRICS_PORT", defaults.worker_metrics_port, _port
            ),
            shutdown_grace=env.get(
                "HOOKPIPE_SHUTDOWN_GRACE", defaults.shutdown_grace, _non_negative_float
            ),
        )


class _Env:
    """Reads variables, and `<NAME>_FILE` for secrets; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        path = self._environ.get(f"{name}_FILE")
        if value is not None and path is not None:
            raise SettingsError(f"{name} and {name}_FILE are both set; set only one")
        if path is not None:
            try:
                value = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(
                    f"{name}_FILE: cannot read {path!r} ({exc.strerror or exc})"
                ) from exc
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        *,
        secret: bool = False,
    ) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            # A secret's value never appears in the message; anything else helps to see it.
            shown = "" if secret else f" (got {_without_password(value)!r})"
            raise SettingsError(f"{name}: {exc}{shown}") from exc

    def secrets(self, name: str) -> tuple[str, ...]:
        """Comma-separated secrets, so that a new one can be added before the old one goes."""
        value = self.raw(name)
        if value is None:
            return ()
        parts = tuple(p.strip() for p in value.split(","))
        if any(p == "" for p in parts):
            raise SettingsError(f"{name}: an empty secret in the comma-separated list")
        return parts


def _without_password(value: str) -> str:
    """A value fit for an error message: a URL's password (amqp://user:pw@host) is masked."""
    try:
        password = urlsplit(value).password
    except ValueError:
        return "[not shown]"
    return value if password is None else value.replace(f":{password}@", ":***@", 1)


def _amqp_url(value: str) -> str:
    if urlsplit(value).scheme not in ("amqp", "amqps"):
        raise ValueError("expected an amqp:// or amqps:// URL")
    return value


def _ledger_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected sqlite:///path or postgresql://...")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.lower()
        if lowered not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return lowered

    return parse


def _path_with(placeholder: str | None) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path starting with /")
        if placeholder is not None and placeholder not in value:
            raise ValueError(f"expected the placeholder {placeholder}")
        return value

    return parse


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_int(value: str) -> int:
    number = _int(value)
    if number <= 0:
        raise ValueError("expected a whole number above 0")
    return number


def _port(value: str) -> int:
    number = _int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number from 0 to 65535 (0: no metrics server)")
    return number


def _positive_float(value: str) -> float:
    number = _float(value)
    if not number > 0:
        raise ValueError("expected a number above 0")
    return number


def _non_negative_float(value: str) -> float:
    number = _float(value)
    if not number >= 0:
        raise ValueError("expected a number of 0 or more")
    return number


def _fraction(value: str) -> float:
    number = _float(value)
    if not 0 <= number < 1:
        raise ValueError("expected a fraction from 0 up to 1")
    return number


def _delays(value: str) -> tuple[float, ...]:
    delays = tuple(_positive_float(part.strip()) for part in value.split(","))
    if not delays:
        raise ValueError("expected comma-separated seconds, e.g. 1,5,30")
    return delays


def _networks(value: str) -> tuple[IPNetwork, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in value.split(",")
        if part.strip()
    )


def _basic_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ValueError("expected user:password")
    return user, password


def _svix_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 of the part after `whsec_`."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(
            "HOOKPIPE_FLEXPRICE_SECRET: expected whsec_ followed by base64"
        ) from exc
    if not key:
        raise SettingsError("HOOKPIPE_FLEXPRICE_SECRET: the key after whsec_ is empty")
    return key
