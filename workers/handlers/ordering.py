"""Which of two states of one payment is the provider's later one, whatever order they arrive in.

Events of different types travel in different queues, so a payment's updates can arrive out of
order. A state carries the provider's time of it (`PaymentState.version`, ms since the epoch) and
a rank that breaks ties between two states stamped with the same time (e.g. a refund outranks the
success it follows). A handler's `decide` keeps the current state unless the new one is later.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from hookpipe.workers.ledger import Payment

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """A timezone-aware datetime as whole ms since the epoch, without float rounding."""
    return (moment - _EPOCH) // _MS


def is_later(version: int, rank: int, current: Payment | None, current_rank: int) -> bool:
    """Whether a state at (version, rank) should replace `current`, whose rank is `current_rank`.

    With no current state, or one without a version, the new state wins; on a full tie the
    current one stays, so that applying the same state twice changes nothing.
    """
    if current is None or current.version is None:
        return True
    return (version, rank) > (current.version, current_rank)
