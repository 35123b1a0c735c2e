"""The ingress's errors. Each refusal carries its HTTP status and a short reason for the caller.

The status lives on the class, so the mapping from error to answer is in this one place and the
request handler only turns a Refused into its response.
"""

from __future__ import annotations

from typing import ClassVar

from hookpipe.errors import HookpipeError


class IngressError(HookpipeError):
    """Root of the ingress's errors."""


class SimulationError(IngressError):
    """`hookpipe simulate` cannot build the webhook it was asked for; the message says why."""


class Refused(IngressError):
    """A webhook the ingress refuses; `reason` is safe to send back and to log."""

    status: ClassVar[int] = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownProvider(Refused):
    """No such provider, or one whose secret is not configured: it accepts nothing."""

    status = 404


class PayloadTooLarge(Refused):
    """The body is over HOOKPIPE_MAX_BODY_BYTES."""

    status = 413


class ReadTimeout(Refused):
    """The body did not arrive within HOOKPIPE_READ_TIMEOUT."""

    status = 408


class UnsupportedEncoding(Refused):
    """The body came with a Content-Encoding: the signatures are over the bytes as sent, and no
    provider compresses its webhooks, so it is refused rather than inflated."""

    status = 415


class AuthenticationFailed(Refused):
    """A signature, timestamp, Basic auth or peer address check failed.

    `reason` names the check (it becomes a metric label, so it is one of a fixed few strings),
    never the value expected.
    """

    status = 401


class InvalidEnvelope(Refused):
    """The body is empty, not JSON, cannot be read whole, or lacks the event id or type."""

    status = 400
