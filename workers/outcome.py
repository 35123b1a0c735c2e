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
from hookpipe.workers.messages import MalformedMessage

# Dead-letter headers are read by people in `hookpipe dlq show`; a stack of nested causes or a
# provider's long message is not worth more than this.
MAX_ERROR_CHARS = 500


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


class DeadLetterReason(enum.StrEnum):
    """Why a worker dead-lettered a message: the `reason` label of the dead-letter counter.

    A fixed few, one per branch of `outcome_of`, so that a dashboard can tell a provider's broken
    payloads from an outage that outlasted the retries. A message the broker dead-letters itself
    (its delivery limit reached: workers kept crashing on it) never reaches a worker's settle, so
    it is not counted here; `dlq show` names it "broker: delivery_limit".
    """

    MALFORMED = "malformed"  # the message lacks what the ingress always sets (id, type)
    UNDECODABLE = "undecodable"  # the body is not JSON, or not the JSON of its event type
    INVALID = "invalid"  # the body decodes but a field fails validation
    PERMANENT = "permanent"  # the handler says retrying cannot help (a 4xx, a missing setting)
    RETRIES_EXHAUSTED = "retries_exhausted"  # a passing failure outlasted HOOKPIPE_MAX_ATTEMPTS


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a message: the action, and for a failure why and (retry) how long to wait."""

    action: Action
    error_type: str = ""
    error: str = ""  # free of personal data and truncated: it goes into headers and logs
    delay_ms: int = 0  # RETRY only: the delay queue of the schedule the message waits in
    unexpected: bool = False  # not one of our errors: a bug, or a library error left unwrapped
    reason: DeadLetterReason | None = None  # DEAD_LETTER only


ACK = Outcome(Action.ACK)


def outcome_of(exc: BaseException | None, attempt: int, policy: RetryPolicy) -> Outcome:
    """Map a handler's result (None: it returned) on its `attempt`-th delivery to an outcome."""
    if exc is None:
        return ACK
    error_type = type(exc).__name__
    match exc:
        # ValidationError is a DecodeError: both mean the body can never be decoded.
        case MalformedMessage():
            return _dead(exc, DeadLetterReason.MALFORMED)
        case msgspec.ValidationError():
            return _dead(exc, DeadLetterReason.INVALID)
        case msgspec.DecodeError():
            return _dead(exc, DeadLetterReason.UNDECODABLE)
        case PermanentError() | SettingsError():
            return _dead(exc, DeadLetterReason.PERMANENT)
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
        return Outcome(
            Action.DEAD_LETTER,
            error_type,
            message,
            unexpected=unexpected,
            reason=DeadLetterReason.RETRIES_EXHAUSTED,
        )
    delay_ms = retry_delay_ms(policy, attempt, retry_after)
    return Outcome(Action.RETRY, error_type, message, delay_ms, unexpected)


def _dead(exc: BaseException, reason: DeadLetterReason) -> Outcome:
    return Outcome(Action.DEAD_LETTER, type(exc).__name__, error_text(exc), reason=reason)


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
