"""Personal data: which keys name it, and how it is masked before it leaves the process.

One rule set for every place that needs it: log lines (hookpipe.logs), the reasons dead letters
carry (hookpipe.workers.outcome) and the bodies `hookpipe dlq show` prints.
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


def mask(value: Any) -> Any:
    """A copy of decoded JSON with personal data masked: values of personal keys, at any depth,
    and e-mail addresses anywhere in text. Empty values stay as they are: they reveal nothing."""
    if isinstance(value, dict):
        return {
            key: MASK
            if is_personal_key(key) and value[key] not in (None, "", [], {})
            else mask(value[key])
            for key in value
        }
    if isinstance(value, list):
        return [mask(item) for item in value]
    if isinstance(value, str):
        return _EMAIL.sub(MASK, value)
    return value


def mask_text(text: str, *, quoted: bool = False) -> str:
    """Free text with e-mail addresses and long digit runs masked; with `quoted`, every quoted
    value too (for messages that quote what they were given)."""
    if quoted:
        text = _QUOTED.sub("'…'", text)
    text = _EMAIL.sub("[email]", text)
    return _DIGITS.sub("[number]", text)
