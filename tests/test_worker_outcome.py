"""The one mapping from a handler's result to what becomes of its message."""

from __future__ import annotations

import msgspec
import pytest

from hookpipe.errors import SettingsError
from hookpipe.settings import RetryPolicy
from hookpipe.workers.errors import PermanentError, TransientError
from hookpipe.workers.messages import MalformedMessage
from hookpipe.workers.outcome import (
    ACK,
    MAX_ERROR_CHARS,
    Action,
    DeadLetterReason,
    error_text,
    outcome_of,
    retry_delay_ms,
)

POLICY = RetryPolicy(delays=(1.0, 5.0, 30.0), max_attempts=4, jitter=0.2)


def test_success_is_an_ack() -> None:
    assert outcome_of(None, 1, POLICY) is ACK


def test_transient_error_retries_on_the_backoff_schedule() -> None:
    delays = [outcome_of(TransientError("db down"), n, POLICY).delay_ms for n in (1, 2, 3)]
    assert delays == [1000, 5000, 30000]
    outcome = outcome_of(TransientError("db down"), 1, POLICY)
    assert (outcome.action, outcome.error_type, outcome.error) == (
        Action.RETRY,
        "TransientError",
        "db down",
    )
    assert not outcome.unexpected


def test_the_last_attempt_dead_letters_saying_it_gave_up() -> None:
    outcome = outcome_of(TransientError("db down"), 4, POLICY)
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.error == "gave up after 4 attempts: db down"


@pytest.mark.parametrize(
    "exc",
    [
        PermanentError("DreamClass answered 404"),
        SettingsError("HOOKPIPE_DREAMCLASS_API_URL is not set"),
        msgspec.DecodeError("JSON is malformed"),
        msgspec.ValidationError("Expected `str`, got `int` - at `$.id`"),
    ],
)
def test_permanent_failures_dead_letter_on_the_first_attempt(exc: Exception) -> None:
    outcome = outcome_of(exc, 1, POLICY)
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.error_type == type(exc).__name__
    assert outcome.error == str(exc)


@pytest.mark.parametrize(
    ("exc", "attempt", "reason"),
    [
        (MalformedMessage("the message has no type"), 1, DeadLetterReason.MALFORMED),
        (msgspec.DecodeError("JSON is malformed"), 1, DeadLetterReason.UNDECODABLE),
        (msgspec.ValidationError("Expected `str` - at `$.id`"), 1, DeadLetterReason.INVALID),
        (PermanentError("DreamClass answered 404"), 1, DeadLetterReason.PERMANENT),
        (SettingsError("HOOKPIPE_DREAMCLASS_API_URL is not set"), 1, DeadLetterReason.PERMANENT),
        (TransientError("db down"), 4, DeadLetterReason.RETRIES_EXHAUSTED),
        (ValueError("a bug"), 4, DeadLetterReason.RETRIES_EXHAUSTED),
    ],
)
def test_each_dead_letter_says_why_in_one_of_a_few_reasons(
    exc: Exception, attempt: int, reason: DeadLetterReason
) -> None:
    outcome = outcome_of(exc, attempt, POLICY)
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason is reason


def test_a_retry_has_no_dead_letter_reason() -> None:
    assert outcome_of(TransientError("db down"), 1, POLICY).reason is None


def test_an_unexpected_exception_is_transient_and_its_text_withheld() -> None:
    outcome = outcome_of(ValueError("Ron Rivest owes 5000"), 1, POLICY)
    assert (outcome.action, outcome.error_type, outcome.error) == (
        Action.RETRY,
        "ValueError",
        "unexpected ValueError",
    )
    assert outcome.unexpected
    assert outcome_of(ValueError("x"), 4, POLICY).error == (
        "gave up after 4 attempts: unexpected ValueError"
    )


@pytest.mark.parametrize(
    ("retry", "retry_after", "expected_ms"),
    [
        (1, None, 1000),
        (1, 0.0, 1000),  # never sooner than the backoff
        (1, 2.0, 5000),  # the smallest scheduled delay that honours it
        (1, 5.0, 5000),
        (2, 1.0, 5000),
        (1, 3600.0, 30000),  # none honours it: the longest there is
        (9, None, 30000),  # past the schedule, the last delay repeats
    ],
)
def test_retry_delay_honours_retry_after_within_the_schedule(
    retry: int, retry_after: float | None, expected_ms: int
) -> None:
    assert retry_delay_ms(POLICY, retry, retry_after) == expected_ms
    if retry_after is not None and retry < POLICY.max_attempts:
        outcome = outcome_of(TransientError("429", retry_after=retry_after), retry, POLICY)
        assert outcome.delay_ms == expected_ms


def test_error_text_masks_personal_data() -> None:
    text = error_text(
        PermanentError("customer ron@example.com, phone +91 98765 43210, card 4111-1111-1111-1111")
    )
    assert "ron@example.com" not in text
    assert "98765" not in text
    assert "4111" not in text
    assert text == "customer [email], phone [number], card [number]"


def test_error_text_masks_the_value_msgspec_quotes() -> None:
    exc = msgspec.ValidationError("Invalid enum value 'Ron Rivest' - at `$.payload.status`")
    assert error_text(exc) == "Invalid enum value '…' - at `$.payload.status`"


def test_error_text_is_one_truncated_line() -> None:
    text = error_text(PermanentError("line one\nline two " + "x" * 2000))
    assert "\n" not in text
    assert len(text) == MAX_ERROR_CHARS
    assert text.startswith("line one line two")
    assert text.endswith("…")
