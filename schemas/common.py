"""msgspec types every provider's schemas share: exact money, aware datetimes, Unix times."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final

import msgspec

# An event id or type: it ends up in AMQP short strings (message_id, routing key: at most 255
# bytes) and in log lines, so printable ASCII without spaces, short enough for
# "{provider}.{type}" to fit.
TOKEN_PATTERN = "^[!-~]{1,128}$"
Token = Annotated[str, msgspec.Meta(pattern=TOKEN_PATTERN)]

# A moment with its zone: an RFC 3339 string without an offset is a ValidationError, not a
# guess about which zone was meant.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

# Money, exact: msgspec decodes a JSON number (10000.0) or a decimal string ("3000.00") straight
# from its text into a Decimal, keeping the scale that was sent and never passing through float.
Money = Decimal

# Whole seconds since the epoch, as Jodo's `timestamp` and Rapyd's `created_at` are; bounded by
# the end of year 9999, so that a value out of range is refused when decoding (its field named)
# instead of overflowing a datetime or the ledger's BIGINT (as ms) later.
LAST_SECOND: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
UnixSeconds = Annotated[int, msgspec.Meta(ge=0, le=LAST_SECOND)]
# Milliseconds since the epoch, as DreamClass's `timestamp` is; the same bound.
UnixMillis = Annotated[int, msgspec.Meta(ge=0, le=LAST_SECOND * 1000 + 999)]
# A provider's numeric id: what a BIGINT holds.
Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


def from_unix_seconds(seconds: int) -> datetime:
    """A Unix time in seconds as a timezone-aware (UTC) datetime."""
    return datetime.fromtimestamp(seconds, UTC)
