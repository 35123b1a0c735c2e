"""The one place that decides what becomes of a message once its handler has run.

A handler succeeds (ack), fails for a passing reason (delayed retry, until the attempts run
out) or fails for good (dead-letter at once). Handlers only raise; they never choose.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

from hookpipe import personal
from hookpipe.errors import SettingsError
from hookpipe.settings import RetryPolicy
from hookpipe.workers.errors import PermanentError, TransientError

# Dead-letter headers are read by people in `hookpipe dlq show`; a stack of nested causes or a
# provider's long message is not worth more than this.
MAX_ERROR_CHARS = 500


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a message: the action, and for a failure why and (retry) how long to wait."""

    action: Action
    error_type: str = ""
    error: str = ""  # free of personal data and truncated: it goes into headers and logs
    delay_ms: int = 0  # RETRY only: the delay queue of the schedule the message waits in
    unexpected: bool = False  # not one of our errors: a bug, or a library error left unwrapped


ACK = Outcome(Action.ACK)


def outcome_of(exc: BaseException | None, attempt: int, policy: RetryPolicy) -> Outcome:
    """Map a handler's result (None: it returned) on its `attempt`-th delivery to an outcome."""
    if exc is None:
        return ACK
    error_type = type(exc).__name__
    match exc:
        # ValidationError is a DecodeError: both mean the body can never be decoded.
        case PermanentError() | SettingsError() | msgspec.DecodeError():
            return Outcome(Action.DEAD_LETTER, error_type, error_text(exc))
        case TransientError():
            message = error_text(exc)
            retry_after = exc.retry_after
        case _:
            # A bug or an unwrapped library error: retrying may help (a race, a flaky call),
            # and the attempt limit bounds the cost. Its text is withheld: it was not written
            # with logs in mind and may quote personal data.
            message = f"unexpected {error_type}"
            retry_after = None
    unexpected = not isinstance(exc, TransientError)
    if attempt >= policy.max_attempts:
        message = _truncate(f"gave up after {attempt} attempts: {message}")
        return Outcome(Action.DEAD_LETTER, error_type, message, unexpected=unexpected)
    delay_ms = retry_delay_ms(policy, attempt, retry_after)
    return Outcome(Action.RETRY, error_type, message, delay_ms, unexpected)


def retry_delay_ms(policy: RetryPolicy, retry: int, retry_after: float | None = None) -> int:
    """The delay queue for retry number `retry`: the schedule's backoff, or longer if asked.

    A Retry-After picks the smallest scheduled delay that honours it (the longest if none
    does); the backoff still applies, so a remote side asking for 0 s is not hammered.
    """
    wanted = round(policy.delay_for(retry) * 1000)
    if retry_after is not None:
        wanted = max(wanted, round(retry_after * 1000))
    scheduled = sorted({round(d * 1000) for d in policy.delays})
    return next((d for d in scheduled if d >= wanted), scheduled[-1])


def error_text(exc: BaseException) -> str:
    """The exception's message, with anything that looks like personal data masked, truncated."""
    text = str(exc) or type(exc).__name__
    # msgspec quotes the value it rejects: a name, an e-mail, whatever the field held.
    text = personal.mask_text(text, quoted=isinstance(exc, msgspec.DecodeError))
    return _truncate(" ".join(text.split()))


def _truncate(text: str) -> str:
    if len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS - 1] + "…"
