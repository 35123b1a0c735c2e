"""The root of hookpipe's exceptions, and the errors of the shared package."""


class HookpipeError(Exception):
    """Root of every error hookpipe raises on purpose."""


class SettingsError(HookpipeError):
    """A setting is missing or malformed; the message is one line that names the variable."""


class SetupError(HookpipeError):
    """The broker or the ledger cannot be used as configured; the message is one line saying
    what is wrong and what to do."""


class BrokerUnavailable(HookpipeError):
    """RabbitMQ cannot be reached, or did not confirm a publish in time."""
