"""FastAPI + Celery, what a team would build instead of hookpipe's ingress: the peers phase's
names, and whether its optional dependencies are installed.

Imports neither FastAPI nor Celery, so that the bench runs (and says how to add them) without
the `peers` extra; `bench.peer_app` is the peer itself, run as a child process.
"""

from __future__ import annotations

import importlib.util
from typing import Final

# The quorum queue the peer's Celery publishes to, through a direct exchange of its own: apart
# from hookpipe's topology in the same vhost, so the two never count each other's messages.
QUEUE: Final = "peer.celery.jodo"
EXCHANGE: Final = "peer.celery"
# The Celery task the peer sends; no worker runs it, the phase measures the ingress side only.
TASK: Final = "peer.jodo.webhook"

_MODULES: Final = ("fastapi", "uvicorn", "httptools", "celery")
INSTALL: Final = "needs FastAPI, uvicorn and Celery: .venv/bin/pip install -e '.[peers]'"


def installed() -> bool:
    """Whether the `peers` extra's packages can be imported by the bench's Python."""
    return all(importlib.util.find_spec(name) is not None for name in _MODULES)
