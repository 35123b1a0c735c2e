"""Parsers of settings' and command-line values: each takes the text, returns the value or
raises ValueError whose message says what was expected (the caller names the variable or option).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def amqp_url(value: str) -> str:
    """One amqp:// URL, or several (the nodes of one cluster) separated by commas."""
    parts = [part.strip() for part in value.split(",")]
    if any(urlsplit(part).scheme not in ("amqp", "amqps") for part in parts):
        raise ValueError("expected an amqp:// or amqps:// URL, or several separated by commas")
    return ",".join(parts)


def ledger_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected sqlite:///path or postgresql://...")
    return value


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return value


def choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.lower()
        if lowered not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return lowered

    return parse


def path_with(placeholder: str | None) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path starting with /")
        if placeholder is not None and placeholder not in value:
            raise ValueError(f"expected the placeholder {placeholder}")
        return value

    return parse


def spool_dir(value: str) -> str:
    """A directory, or `off` (given as the empty string)."""
    if value.strip().lower() == "off":
        return ""
    return value


def whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError("expected a whole number") from None


def number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def non_negative_int(value: str) -> int:
    parsed = whole_number(value)
    if parsed < 0:
        raise ValueError("expected a whole number of 0 or more")
    return parsed


def positive_int(value: str) -> int:
    parsed = whole_number(value)
    if parsed <= 0:
        raise ValueError("expected a whole number above 0")
    return parsed


def port(value: str) -> int:
    parsed = whole_number(value)
    if not 0 <= parsed <= 65535:
        raise ValueError("expected a port number from 0 to 65535 (0: no metrics server)")
    return parsed


def listen_port(value: str) -> int:
    parsed = whole_number(value)
    if not 0 <= parsed <= 65535:
        raise ValueError("expected a port number from 0 to 65535 (0: any free port)")
    return parsed


def positive_float(value: str) -> float:
    parsed = number(value)
    if not parsed > 0:
        raise ValueError("expected a number above 0")
    return parsed


def non_negative_float(value: str) -> float:
    parsed = number(value)
    if not parsed >= 0:
        raise ValueError("expected a number of 0 or more")
    return parsed


def fraction(value: str) -> float:
    parsed = number(value)
    if not 0 <= parsed < 1:
        raise ValueError("expected a fraction from 0 up to 1")
    return parsed


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(value: str) -> timedelta:
    """90s, 15m, 2h, 1d, 1h30m (units s, m, h, d and w, combined at will) or plain seconds."""
    cleaned = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        return timedelta(seconds=float(cleaned))
    if not cleaned or _DURATION_PART.sub("", cleaned).strip():
        raise ValueError("expected a duration like 90s, 15m, 2h, 1d or 1h30m")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(cleaned))
    return timedelta(seconds=seconds)


def positive_duration(value: str) -> timedelta:
    parsed = duration(value)
    if parsed <= timedelta(0):
        raise ValueError("expected a duration above 0")
    return parsed


def delays(value: str) -> tuple[float, ...]:
    parsed = tuple(positive_float(part.strip()) for part in value.split(","))
    if not parsed:
        raise ValueError("expected comma-separated seconds, e.g. 1,5,30")
    return parsed


def networks(value: str) -> tuple[IPNetwork, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in value.split(",")
        if part.strip()
    )


def basic_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ValueError("expected user:password")
    return user, password
