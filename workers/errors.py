"""The workers' errors: the class of a handler's error decides what happens to its message; the
dead-letter commands' errors say why an operation cannot be done."""

from hookpipe.errors import HookpipeError, SetupError


class WorkerError(HookpipeError):
    """Root of the workers' errors. The message must hold no personal data or secret."""


class TransientError(WorkerError):
    """Passing trouble (a database, broker or remote API hiccup): retry later, with backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # A delay the remote side asked for (e.g. HTTP Retry-After), in seconds, if any.
        self.retry_after = retry_after


class LedgerStorageError(TransientError):
    """The ledger's storage refuses writes for now (SQLite: the disk full, the file read-only):
    passing once an operator acts; the message says where and why."""


class LedgerSetupError(WorkerError, SetupError):
    """The ledger cannot be used as configured (no such database, directory or file, a refused
    login, a read-only place): one line saying what and what to do; a restart will not fix it."""


class PermanentError(WorkerError):
    """Retrying cannot help (a broken body, a validation error, a 4xx, a missing setting):
    dead-letter at once."""


class DlqError(WorkerError):
    """A dead-letter operation cannot be done; the message says why, in one line."""


class UnknownQueue(DlqError):
    """`--queue` names no handled queue (nor the DLQ of one)."""


class DlqBusy(DlqError):
    """Another dead-letter operation is working on the same DLQ."""
