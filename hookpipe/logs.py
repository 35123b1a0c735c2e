"""The one structlog configuration: JSON lines in production, a readable console in development."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import orjson
import structlog

from hookpipe import personal

# Keys that carry a secret, or a whole webhook and with it personal data: never logged. Keys that
# name personal data are the other half (hookpipe.personal).
_NEVER_LOGGED = frozenset(
    {
        "secret",
        "signature",
        "password",
        "authorization",
        "api_key",
        "token",
        "body",
        "payload",
        "headers",
    }
)


class _Stderr:
    """sys.stderr looked up at each write, so a replaced stderr (a test's capture, a daemon's
    redirect) is followed instead of a closed one being kept."""

    def write(self, data: str) -> int:
        return sys.stderr.write(data)

    def flush(self) -> None:
        sys.stderr.flush()


class _StderrBytes:
    def write(self, data: bytes) -> int:
        return sys.stderr.buffer.write(data)

    def flush(self) -> None:
        sys.stderr.buffer.flush()


# The fields of the webhook or message being handled (its request id, provider, event id...), for
# every line written while it is: one context variable, set once per request and read only by
# the lines actually written. structlog.contextvars would set a variable per field per request
# and copy the whole context to clear them: a few per cent of a request, for lines mostly not
# written.
_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("hookpipe_log_fields", default=None)


def log_fields(**fields: Any) -> dict[str, Any]:
    """Make `fields` the current task's log fields, in place of the ones before; the dict
    returned is live: a field added to it is on every line from then on."""
    _FIELDS.set(fields)
    return fields


@contextlib.contextmanager
def logged_with(**fields: Any) -> Iterator[dict[str, Any]]:
    """log_fields() for a block: the fields before are back after it."""
    token = _FIELDS.set(fields)
    try:
        yield fields
    finally:
        _FIELDS.reset(token)


def merge_fields(
    _: Any, __: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """The processor that puts the current log fields on a line; a line's own keys win."""
    fields = _FIELDS.get()
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


def _redact(_: Any, __: str, event_dict: structlog.types.EventDict) -> structlog.types.EventDict:
    """A last guard: a key that names personal data or a secret is masked, whoever bound it."""
    for key in [k for k in event_dict if k in _NEVER_LOGGED or personal.is_personal_key(k)]:
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configure structlog once for the process; `log_format` is auto, json or console."""
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.types.Processor] = [
        merge_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    level_no = logging.getLevelNamesMapping()[level.upper()]
    if log_format == "json":
        structlog.configure(
            processors=[
                *shared,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level_no),
            logger_factory=structlog.BytesLoggerFactory(_StderrBytes()),  # type: ignore[arg-type]
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(level_no),
            logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
            cache_logger_on_first_use=True,
        )
    # aiohttp, aiormq, aio-pika and asyncpg log through the standard library: their records go
    # through the same processors, so that in JSON mode every line is JSON, a traceback one field
    # of it. Their warnings are kept, their chatter dropped.
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_text)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer()
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Without the bound context: a library logs from tasks of its own that merely
            # inherited it (asyncpg's pool refilling itself after a handler released a
            # connection), so the line would name an event it is not about.
            foreign_pre_chain=[*shared[1:], structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    # What the interpreter itself would print (a warning, an exception it cannot raise, one that
    # ends the process) goes the same way.
    logging.captureWarnings(True)
    sys.unraisablehook = _log_unraisable
    sys.excepthook = _log_uncaught
    # Their lines on each failed connection attempt repeat what hookpipe.broker says once, in
    # one line ("broker connection lost", "broker reconnected", "cannot reach the broker ...").
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    logging.getLogger("aio_pika").setLevel(logging.ERROR)
    tools = logging.getLogger("aio_pika.tools")
    if _channel_restore_race not in tools.filters:
        tools.addFilter(_channel_restore_race)


def _channel_restore_race(record: logging.LogRecord) -> bool:
    """False for aio-pika's error when a robust channel, closed with its lost connection, tries
    to reopen itself on the connection that is gone: every process logged it once per broker
    node lost, though the connection's reconnect then restores the channel, as the lines
    "broker connection lost" and "broker reconnected" say."""
    return not (
        record.msg == "Callback %r error: %s: %s"
        and isinstance(record.args, tuple)
        and "RobustChannel._on_close" in repr(record.args[0])
    )


def _log_unraisable(unraisable: Any) -> None:
    exc = unraisable.exc_value
    logging.getLogger("python").error(
        "exception ignored in %r",
        unraisable.object,
        exc_info=(type(exc), exc, unraisable.exc_traceback) if exc is not None else None,
    )


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    logging.getLogger("python").critical("uncaught exception", exc_info=(kind, exc, tb))


def _json_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()
