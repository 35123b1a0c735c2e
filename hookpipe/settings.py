"""One typed settings object, built once at start from the environment and passed down.

Each setting is declared once, with `setting()`: its default, the parser of its text (from
hookpipe.values, which raises ValueError saying what was expected), its help line and whether it
is a secret. Its environment variable is derived, HOOKPIPE_ and the field's name in capitals
(unless it names its own), and so is the `<NAME>_FILE` variant that reads the value from a file.
The README's settings table is generated from the same declarations (`python -m
hookpipe.settings`), and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from hookpipe import values
from hookpipe.errors import SettingsError

T = TypeVar("T")

ENV_PREFIX: Final = "HOOKPIPE_"
_DECLARED: Final = "hookpipe.setting"
_SECTION: Final = "hookpipe.section"


@dataclass(frozen=True, slots=True)
class Declaration:
    """What `setting()` records about a field."""

    parse: Callable[[str], Any]
    help: str
    env: str | None
    secret: bool
    # The text of a value, as it would be set in the environment (the parser's inverse).
    text: Callable[[Any], str] | None
    # The default as the README shows it; the default's text unless given.
    shown_default: str | None


def setting(
    default: Any,
    parse: Callable[[str], Any],
    *,
    help: str,
    env: str | None = None,
    secret: bool = False,
    text: Callable[[Any], str] | None = None,
    shown_default: str | None = None,
) -> Any:
    """Declare a setting: a dataclass field whose value comes from the environment."""
    declaration = Declaration(parse, help, env, secret, text, shown_default)
    return field(default=default, metadata={_DECLARED: declaration})


def group(kind: type) -> Any:
    """A field holding a group of settings of its own (read with the same rules)."""
    return field(default_factory=kind, metadata={_SECTION: kind})


def _seconds(value: str) -> float:
    """A duration (7d, 12h, 90m) or plain seconds, as seconds."""
    return values.positive_duration(value).total_seconds()


def _duration_text(value: float) -> str:
    return f"{value:g}s"


def secret_list(value: str) -> tuple[str, ...]:
    """Comma-separated secrets, so that a new one can be added before the old one goes."""
    parts = tuple(part.strip() for part in value.split(","))
    if any(part == "" for part in parts):
        raise ValueError("an empty secret in the comma-separated list")
    return parts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delayed-retry schedule: the n-th retry waits delays[n-1] seconds, give or take the jitter."""

    delays: tuple[float, ...] = setting(
        (1.0, 5.0, 30.0, 120.0, 600.0),
        values.delays,
        env="HOOKPIPE_RETRY_DELAYS",
        help="seconds before each retry (jittered); the last repeats",
    )
    max_attempts: int = setting(
        6,
        values.positive_int,
        env="HOOKPIPE_MAX_ATTEMPTS",
        help="attempts in all, the first delivery included, before a failing message is "
        "dead-lettered",
    )
    jitter: float = setting(
        0.2,
        values.fraction,
        env="HOOKPIPE_RETRY_JITTER",
        help="the fraction each delay varies by, at random, so that a burst of failures "
        "spreads out",
    )

    def delay_for(self, retry: int) -> float:
        """The base delay before retry number `retry` (1-based); the last delay repeats."""
        return self.delays[min(retry, len(self.delays)) - 1]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything hookpipe reads from its environment; see the README's settings table."""

    amqp_url: str = setting(
        "amqp://guest:guest@127.0.0.1:5672/",
        values.amqp_url,
        help="the broker; the nodes of one cluster comma-separated: each process connects to "
        "any that answers (in a random order) and on a loss to the next",
    )
    reconnect_interval: float = setting(
        1.0,
        values.positive_float,
        help="seconds between attempts to reconnect to the broker, for the ingress and the "
        "workers alike (a `reconnect_interval` in the URL wins)",
    )
    ledger_url: str = setting(
        "sqlite:///var/ledger.sqlite3",
        values.ledger_url,
        help="the ledger; `postgresql://user@host/db` for production",
    )
    ledger_timeout: float = setting(
        10.0,
        values.positive_float,
        help="seconds a PostgreSQL connect, statement or wait for a pooled connection may take "
        "before the event is retried later",
    )
    ledger_pool_size: int = setting(
        10,
        values.positive_int,
        help="PostgreSQL connections per worker process; a batch of writes holds one for four "
        "round trips (BEGIN, one read, one write, COMMIT)",
    )
    # 16: a batch's commit is shared by that many events, while a worker at its default
    # concurrency (32) still fills two batches at once, one committing while the next gathers
    # (the worker caps a batch at half its concurrency for that reason).
    ledger_batch_size: int = setting(
        16,
        values.positive_int,
        help="events a worker applies in one ledger transaction at most (a bad one fails alone, "
        "its batch-mates are applied); never more than half `HOOKPIPE_WORKER_CONCURRENCY`, so "
        "that one batch gathers while another commits; 1: a transaction per event",
    )
    # 2 ms: under load a batch fills long before; alone, an event waits no longer than a
    # round trip to the database takes anyway.
    ledger_batch_wait: float = setting(
        0.002,
        values.non_negative_float,
        help="seconds a ledger batch waits for more events once it has its first",
    )

    max_body_bytes: int = setting(1_048_576, values.positive_int, help="larger bodies get 413")
    read_timeout: float = setting(
        10.0,
        values.positive_float,
        help="seconds a client has to send a request's headers, and again its body (else 408)",
    )
    max_connections: int = setting(
        1000,
        values.positive_int,
        help="open connections per ingress process; past it a new one is answered 503",
    )
    replay_memory: int = setting(
        10_000,
        values.non_negative_int,
        help="webhook ids each ingress process remembers (about 180 bytes each, 1.8 MB at the "
        "default): a repeat of one is answered 200 without a second publish (0: off)",
    )
    spool_dir: str = setting(
        "var/spool",
        values.spool_dir,
        help="where the ingress keeps webhooks no broker node took, until one does (answered "
        "200 once on disk; one directory per ingress process); `off`: answer 503 instead",
        text=lambda value: value or "off",
    )
    spool_max_bytes: int = setting(
        1_073_741_824,
        values.positive_int,
        help="the outage spool's size limit (1 GiB: about a million typical webhooks); past "
        "it a webhook is answered 503",
    )
    publish_timeout: float = setting(
        5.0,
        values.positive_float,
        help="seconds the ingress waits for the broker's confirm before answering 503",
    )
    archive_max_age: float = setting(
        7 * 86400.0,
        _seconds,
        help="how long the archive stream (`hookpipe events`) keeps a webhook; the broker drops "
        "a whole segment once its newest webhook is older",
        text=_duration_text,
        shown_default="`7d`",
    )
    # 10 GiB: at a typical 1.5 KB a webhook (body and headers), 7 days of a steady 11 webhooks
    # a second, about 7 million. Past it the oldest segments go first, whatever their age: a
    # burst cannot fill the broker's disk, whose free-space alarm would block every publisher.
    archive_max_bytes: int = setting(
        10 * 1024**3,
        values.positive_int,
        help="the archive stream's size limit in bytes (10 GiB: about 7 million typical "
        "webhooks); past it the oldest segments are dropped, whatever their age",
    )
    # Retention drops whole segments, so a segment is what the limits are kept to: 100 MB is 1 %
    # of the default size limit, and under a day of a steady webhook a second.
    archive_segment_bytes: int = setting(
        100 * 1024**2,
        values.positive_int,
        help="the size of each of the archive stream's segment files; retention drops whole "
        "segments, so it is how closely the limits are kept",
    )
    retry: RetryPolicy = group(RetryPolicy)
    delivery_limit: int = setting(
        20,
        values.positive_int,
        help="the quorum queues' delivery limit: the backstop for a message that crashes workers",
    )
    worker_concurrency: int = setting(
        32,
        values.positive_int,
        help="handlers at once per provider in a worker process, a bulkhead each (and each "
        "queue's prefetch)",
    )
    worker_metrics_port: int = setting(
        9101,
        values.port,
        help="a worker's Prometheus port, with `/healthz` and `/readyz` (0: none); when it is "
        "taken, the next free one of the 9 above it (logged), unless the worker shares "
        "`HOOKPIPE_METRICS_DIR` with the one that holds it: that one's scrape then counts both",
    )
    metrics_dir: str = setting(
        "",
        str,
        help="a directory the worker (or ingress) processes of this host share so that one "
        "endpoint serves all their metrics (prometheus-client's multiprocess mode; a "
        "subdirectory per role); empty: each process counts alone, and `--processes N` uses a "
        "temporary one",
        shown_default="empty",
    )
    shutdown_grace: float = setting(
        20.0,
        values.non_negative_float,
        help="seconds a stopping worker lets in-flight handlers finish",
    )
    # Off where least-privilege users may not declare: the topology comes from deploy/'s
    # definitions file, or from `hookpipe topology declare` run by an operator.
    declare_topology: bool = setting(
        True,
        values.boolean,
        help="`false` where the broker users may not declare (see `deploy/`)",
    )
    log_format: str = setting(
        "auto",
        values.choice("auto", "json", "console"),
        help="`json`, `console`, or `auto` (console on a terminal)",
    )
    log_level: str = setting(
        "info",
        values.choice("debug", "info", "warning", "error"),
        help="`debug`, `info`, `warning`, `error`",
    )

    # Each provider's settings, an instance of its own class (Provider.settings_section).
    sections: tuple[Any, ...] = ()

    def section(self, kind: type[T]) -> T:
        """A provider's settings, as read with these; its defaults if they were not read."""
        for candidate in self.sections:
            if isinstance(candidate, kind):
                return candidate
        return kind()

    def with_section(self, kind: type[T], **changes: Any) -> Settings:
        """These settings with some of a provider's changed."""
        changed = dataclasses.replace(self.section(kind), **changes)  # type: ignore[type-var]
        kept = tuple(item for item in self.sections if not isinstance(item, kind))
        return dataclasses.replace(self, sections=(*kept, changed))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings, each provider's included, from `environ` (default: the process
        environment).

        Raises SettingsError, whose message is one line naming the variable, on a malformed value.
        """
        from hookpipe.providers import settings_sections  # the registry imports this module

        env = os.environ if environ is None else environ
        read = read_settings(cls, env)
        return dataclasses.replace(
            read, sections=tuple(read_settings(kind, env) for kind in settings_sections())
        )


def read_settings(kind: type[T], environ: Mapping[str, str]) -> T:
    """An instance of a settings class whose fields are declared with `setting()`."""
    found: dict[str, Any] = {}
    for item in dataclasses.fields(kind):  # type: ignore[arg-type]
        nested = item.metadata.get(_SECTION)
        if nested is not None:
            found[item.name] = read_settings(nested, environ)
            continue
        declaration: Declaration | None = item.metadata.get(_DECLARED)
        if declaration is None:
            continue
        name = env_name(kind, item.name)
        text = _raw(environ, name)
        if text is None:
            continue
        try:
            found[item.name] = declaration.parse(text)
        except (ValueError, TypeError) as exc:
            # A secret's value never appears in the message; anything else helps to see it.
            shown = "" if declaration.secret else f" (got {_without_password(text)!r})"
            raise SettingsError(f"{name}: {exc}{shown}") from exc
    return kind(**found)


def env_name(kind: type, name: str) -> str:
    """The environment variable of a setting: its own, or the class's prefix and its name."""
    item = {f.name: f for f in dataclasses.fields(kind)}[name]
    declaration: Declaration | None = item.metadata.get(_DECLARED)
    if declaration is not None and declaration.env is not None:
        return declaration.env
    return str(getattr(kind, "ENV_PREFIX", ENV_PREFIX)) + name.upper()


def declarations(kind: type = Settings) -> Iterator[tuple[str, str, Declaration]]:
    """(environment variable, field name, declaration) of every setting, sections included."""
    for item in dataclasses.fields(kind):
        nested = item.metadata.get(_SECTION)
        if nested is not None:
            yield from declarations(nested)
        declaration: Declaration | None = item.metadata.get(_DECLARED)
        if declaration is not None:
            yield env_name(kind, item.name), item.name, declaration


def to_env(settings: Any) -> dict[str, str]:
    """The environment that gives these settings back (a child process's, say); a setting that
    is not set (None) is left out."""
    env: dict[str, str] = {}
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if item.metadata.get(_SECTION) is not None:
            env.update(to_env(value))
            continue
        declaration: Declaration | None = item.metadata.get(_DECLARED)
        if declaration is not None and value is not None:
            env[env_name(type(settings), item.name)] = (declaration.text or _text)(value)
    for plugin_section in getattr(settings, "sections", ()):
        env.update(to_env(plugin_section))
    return env


def settings_table() -> str:
    """The README's settings table, in Markdown: hookpipe's own, then each provider's."""
    from hookpipe.providers import settings_sections

    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for kind in (Settings, *settings_sections()):
        for name, item_name, declaration in declarations(kind):
            default = _default_of(kind, item_name)
            shown = declaration.shown_default
            if shown is None:
                shown = "—" if default in (None, ()) else f"`{_text(default)}`"
            rows.append(f"| `{name}` | {shown} | {declaration.help} |")
    return "\n".join(rows) + "\n"


def _default_of(kind: type, name: str) -> Any:
    for item in dataclasses.fields(kind):
        if item.name == name:
            return item.default
        nested = item.metadata.get(_SECTION)
        if nested is not None:
            try:
                return _default_of(nested, name)
            except KeyError:
                pass
    raise KeyError(name)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_text(item) for item in value)
    return str(value)


def _raw(environ: Mapping[str, str], name: str) -> str | None:
    """A variable's value, or that of the file `<NAME>_FILE` names; None when unset or blank."""
    value = environ.get(name)
    path = environ.get(f"{name}_FILE")
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


def _without_password(value: str) -> str:
    """A value fit for an error message: every URL's password (amqp://user:pw@host, in a
    comma-separated list too) is masked."""
    shown = []
    for part in value.split(","):
        try:
            password = urlsplit(part).password
        except ValueError:
            return "[not shown]"
        shown.append(part if password is None else part.replace(f":{password}@", ":***@", 1))
    return ",".join(shown)


if __name__ == "__main__":
    sys.stdout.write(settings_table())
