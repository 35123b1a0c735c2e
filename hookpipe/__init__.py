"""hookpipe: a queue-backed async pipeline for payment webhooks."""

__version__ = "0.1.0"
