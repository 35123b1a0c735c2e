"""One typed settings object, built once at start from the environment and passed down."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from hookpipe import values
from hookpipe.errors import SettingsError
from hookpipe.values import IPNetwork

T = TypeVar("T")


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
            amqp_url=env.get("HOOKPIPE_AMQP_URL", defaults.amqp_url, values.amqp_url),
            ledger_url=env.get("HOOKPIPE_LEDGER_URL", defaults.ledger_url, values.ledger_url),
            ledger_pool_size=env.get(
                "HOOKPIPE_LEDGER_POOL_SIZE", defaults.ledger_pool_size, values.positive_int
            ),
            log_format=env.get(
                "HOOKPIPE_LOG_FORMAT", defaults.log_format, values.choice("auto", "json", "console")
            ),
            log_level=env.get(
                "HOOKPIPE_LOG_LEVEL",
                defaults.log_level,
                values.choice("debug", "info", "warning", "error"),
            ),
            jodo_secrets=env.secrets("HOOKPIPE_JODO_SECRET"),
            jodo_allowed_ips=env.get("HOOKPIPE_JODO_ALLOWED_IPS", (), values.networks),
            dreamclass_secrets=env.secrets("HOOKPIPE_DREAMCLASS_SECRET"),
            dreamclass_secret_encoding=env.get(
                "HOOKPIPE_DREAMCLASS_SECRET_ENCODING",
                defaults.dreamclass_secret_encoding,
                values.choice("utf-8", "base64"),
            ),
            dreamclass_basic_auth=env.get(
                "HOOKPIPE_DREAMCLASS_BASIC_AUTH", None, values.basic_auth, secret=True
            ),
            dreamclass_api_url=env.get("HOOKPIPE_DREAMCLASS_API_URL", None, values.http_url),
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
                values.path_with("{invoice_id}"),
            ),
            dreamclass_api_payment_methods_path=env.get(
                "HOOKPIPE_DREAMCLASS_API_PAYMENT_METHODS_PATH",
                defaults.dreamclass_api_payment_methods_path,
                values.path_with(None),
            ),
            dreamclass_api_timeout=env.get(
                "HOOKPIPE_DREAMCLASS_API_TIMEOUT",
                defaults.dreamclass_api_timeout,
                values.positive_float,
            ),
            dreamclass_payment_methods_ttl=env.get(
                "HOOKPIPE_DREAMCLASS_PAYMENT_METHODS_TTL",
                defaults.dreamclass_payment_methods_ttl,
                values.non_negative_float,
            ),
            rapyd_access_key=env.get("HOOKPIPE_RAPYD_ACCESS_KEY", None, str, secret=True),
            rapyd_secret_key=env.get("HOOKPIPE_RAPYD_SECRET_KEY", None, str, secret=True),
            rapyd_webhook_url=env.get("HOOKPIPE_RAPYD_WEBHOOK_URL", None, values.http_url),
            rapyd_tolerance=env.get(
                "HOOKPIPE_RAPYD_TOLERANCE", defaults.rapyd_tolerance, values.positive_float
            ),
            flexprice_secrets=tuple(_svix_key(s) for s in env.secrets("HOOKPIPE_FLEXPRICE_SECRET"))
            if env.has("HOOKPIPE_FLEXPRICE_SECRET")
            else (),
            flexprice_tolerance=env.get(
                "HOOKPIPE_FLEXPRICE_TOLERANCE", defaults.flexprice_tolerance, values.positive_float
            ),
            declare_topology=env.get(
                "HOOKPIPE_DECLARE_TOPOLOGY", defaults.declare_topology, values.boolean
            ),
            max_body_bytes=env.get(
                "HOOKPIPE_MAX_BODY_BYTES", defaults.max_body_bytes, values.positive_int
            ),
            publish_timeout=env.get(
                "HOOKPIPE_PUBLISH_TIMEOUT", defaults.publish_timeout, values.positive_float
            ),
            delivery_limit=env.get(
                "HOOKPIPE_DELIVERY_LIMIT", defaults.delivery_limit, values.positive_int
            ),
            retry=RetryPolicy(
                delays=env.get("HOOKPIPE_RETRY_DELAYS", retry_defaults.delays, values.delays),
                max_attempts=env.get(
                    "HOOKPIPE_MAX_ATTEMPTS", retry_defaults.max_attempts, values.positive_int
                ),
                jitter=env.get("HOOKPIPE_RETRY_JITTER", retry_defaults.jitter, values.fraction),
            ),
            worker_concurrency=env.get(
                "HOOKPIPE_WORKER_CONCURRENCY", defaults.worker_concurrency, values.positive_int
            ),
            worker_metrics_port=env.get(
                "HOOKPIPE_WORKER_METRICS_PORT", defaults.worker_metrics_port, values.port
            ),
            shutdown_grace=env.get(
                "HOOKPIPE_SHUTDOWN_GRACE", defaults.shutdown_grace, values.non_negative_float
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
