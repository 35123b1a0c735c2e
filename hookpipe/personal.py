"""Personal data: which keys name it, and how it is masked before it leaves the process.

One rule set for every place that needs it: log lines (hookpipe.logs) drop personal keys, the
reasons dead letters carry (hookpipe.workers.outcome) mask what looks like a value, and the
bodies `hookpipe dlq show` prints keep only what is known to carry no personal data (an
allow-list: ids, types, statuses, amounts, currencies, times).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Final

MASK: Final = "***"

# A key is personal data when its name, lowercased without separators, contains one of these...
_KEY_PARTS: Final = (
    "name",
    "email",
    "phone",
    "mobile",
    "contact",
    "address",
    "last4",
    "fingerprint",
    "cardnumber",
    "cvv",
    "cvc",
    "iban",
    "accountnumber",
    "birth",
    # Free text typed by people (DreamClass's publicNotes / privateNotes, Jodo's notes) may name
    # someone: masked like the rest.
    "notes",
)
# ...or is one of these (too short, or too common inside other names, to match as a part).
_KEYS: Final = frozenset(
    {
        "card",
        "pan",
        "bin",
        "binnumber",
        "number",
        "expiry",
        "expmonth",
        "expyear",
        "expirationmonth",
        "expirationyear",
        "dob",
        "ip",
    }
)

# What may be personal data inside free text, such as an error's message: quoted values (msgspec
# quotes the value it rejects, e.g. "Invalid enum value 'Ron Rivest'"), e-mail addresses, and
# long digit runs (phone and card numbers, with or without separators).
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*")
_DIGITS = re.compile(r"\+?\d(?:[ \-]?\d){9,}")


# Cached: log lines ask about the same few keys over and over.
@functools.lru_cache(maxsize=1024)
def is_personal_key(key: str) -> bool:
    """Whether a key names personal data (names, e-mails, phones, addresses, card data)."""
    normal = re.sub(r"[^a-z0-9]", "", key.lower())
    return normal in _KEYS or any(part in normal for part in _KEY_PARTS)


# What `dlq show` prints without --reveal: only values under keys known to carry no personal
# data, by the key's last word (invoiceId, event_id, created_at, paymentStatus)...
_SHOWN_LAST_WORDS: Final = frozenset(
    {
        "id",
        "ids",
        "type",
        "event",
        "status",
        "state",
        "currency",
        "amount",
        "at",
        "time",
        "timestamp",
        "date",
        "created",
        "updated",
        "version",
        "object",
        "livemode",
    }
)
# ...or by the whole key.
_SHOWN_KEYS: Final = frozenset({"currencycode", "tenant", "statuscode", "invoicenumber"})
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@functools.lru_cache(maxsize=1024)
def is_shown_key(key: str) -> bool:
    """Whether `dlq show` prints a key's value unmasked: an id, type, status, amount, currency
    or time, and not a personal key (`email_id` is masked)."""
    if is_personal_key(key):
        return False
    words = _WORDS.findall(key)
    normal = re.sub(r"[^a-z0-9]", "", key.lower())
    return normal in _SHOWN_KEYS or (bool(words) and words[-1].lower() in _SHOWN_LAST_WORDS)


def mask(value: Any, *, shown: bool = False) -> Any:
    """A copy of decoded JSON in which only the values of keys known to carry no personal data
    (is_shown_key) are left: every other string or number is masked, whatever its key, at any
    depth. Empty values stay as they are: they reveal nothing."""
    if isinstance(value, dict):
        return {key: mask(item, shown=is_shown_key(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [mask(item, shown=shown) for item in value]
    if value is None or isinstance(value, bool) or value == "" or shown:
        return value
    return MASK


def mask_text(text: str, *, quoted: bool = False) -> str:
    """Free text with e-mail addresses and long digit runs masked; with `quoted`, every quoted
    value too (for messages that quote what they were given)."""
    if quoted:
        text = _QUOTED.sub("'…'", text)
    text = _EMAIL.sub("[email]", text)
    return _DIGITS.sub("[number]", text)
