"""Checks the providers' authentication schemes share; every one raises AuthenticationFailed.

Malformed input (non-ASCII, bad base64, a garbage timestamp) is refused with a reason of its own
and never escapes as an untyped ValueError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from hookpipe.ingress.errors import AuthenticationFailed

# Longer than any Unix time in seconds for the next thousands of years: a bound for int().
_MAX_TIMESTAMP_DIGITS = 12


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """The raw HMAC-SHA256 digest."""
    return hmac.new(key, message, hashlib.sha256).digest()


def hmac_sha256_hex(key: bytes, message: bytes) -> bytes:
    """The lowercase hex HMAC-SHA256 digest, as ASCII bytes."""
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")


def matches_any(provided: bytes, expected: Iterable[bytes]) -> bool:
    """Whether `provided` equals one of `expected`, each compared in constant time."""
    return any(hmac.compare_digest(provided, candidate) for candidate in expected)


def required(value: str | None, what: str) -> str:
    """A header's value, or AuthenticationFailed("missing <what>")."""
    if value is None or value == "":
        raise AuthenticationFailed(f"missing {what}")
    return value


def ascii_bytes(value: str, what: str) -> bytes:
    """A header's value as the bytes it was sent as; it must be ASCII."""
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise AuthenticationFailed(f"malformed {what}") from exc


def b64decode(value: str, what: str) -> bytes:
    """Strict base64 decoding (no stray characters), refused as malformed otherwise."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        # ValueError: base64 of a str accepts ASCII only.
        raise AuthenticationFailed(f"malformed {what}") from exc


def check_timestamp(value: str, now: float, tolerance: float) -> None:
    """A Unix time in seconds, within `tolerance` seconds of `now` both ways."""
    # isdigit() alone accepts other scripts' digits, which int() would read.
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_TIMESTAMP_DIGITS):
        raise AuthenticationFailed("malformed timestamp")
    timestamp = int(value)
    if timestamp < now - tolerance:
        raise AuthenticationFailed("timestamp too old")
    if timestamp > now + tolerance:
        raise AuthenticationFailed("timestamp in the future")
