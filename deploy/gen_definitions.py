"""Writes deploy/rabbitmq/definitions.json from hookpipe's own topology plan.

Run `.venv/bin/python deploy/gen_definitions.py` after changing the topology; a test checks
that the committed file is what this script writes, and tests/test_deploy.py runs the ingress,
a worker and the operator commands with exactly these users against the real broker.

Users, each with the least privilege its role needs (RabbitMQ checks, per AMQP method):
- ingress:  basic.publish to hookpipe.accepted (which feeds the archive stream and, exchange to
            exchange, hookpipe.events), and the write permission on hookpipe.events's alternate
            exchange hookpipe.unrouted (without it the broker drops an unroutable webhook
            silently, after confirming it). Nothing else: it declares nothing, reads nothing.
- worker:   basic.consume (read) on the handled queues, basic.publish (write) to
            hookpipe.retry and hookpipe.dlx. Passive declares need no permission.
- operator: `hookpipe topology declare`, `hookpipe dlq list/show/replay/purge` and
            `hookpipe events list/show/replay/export` (basic.consume, read, on the archive
            stream; a replay publishes to hookpipe.requeue). Declaring
            needs configure on every name; queue.bind write on the queue and read on the
            exchange; a queue with a dead-letter exchange read on itself and write on that
            exchange; an exchange with an alternate exchange read on itself and write on that
            one. The dlq commands read the DLQs and hookpipe.unrouted (basic.get, queue.purge),
            publish to hookpipe.requeue (a replay, of an unrouted webhook too), and lock a DLQ
            with an exclusive queue hookpipe.dlq-lock.*. An exchange-to-exchange binding needs
            write on its destination, hookpipe.events. So it may configure and read every
            hookpipe name, and no other, and write all but hookpipe.accepted and hookpipe.retry.
The names are exact, apart from the retry queues (hookpipe.retry.<ms>ms, whose delays are a
setting) and the operator's lock queues.

The passwords here are placeholders for a first start of deploy/compose.yaml: change them with
`rabbitmqctl change_password USER NEW` before anything real goes through.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from hookpipe import constants as c
from hookpipe.providers import handled_queues
from hookpipe.settings import Settings
from hookpipe.topology import definitions

VHOST = "hookpipe"
# The RabbitMQ these definitions were tested on (tests/test_deploy.py); compose.yaml runs the
# same version, and deploy/README.md names it.
RABBITMQ_VERSION = "3.10.8"
TARGET = Path(__file__).parent / "rabbitmq" / "definitions.json"
# Fixed salts keep the generated file stable, so the drift test can compare it byte for byte.
PLACEHOLDER_USERS = {
    "ingress": ("ingress-change-me", b"hpi1"),
    "worker": ("worker-change-me", b"hpw1"),
    "operator": ("operator-change-me", b"hpo1"),
}
# The management UI (deploy/compose.yaml publishes it on loopback): only the operator logs in,
# and it sees and may change only what its permissions allow.
USER_TAGS = {"operator": ["management"]}
# What `hookpipe dlq` locks a queue with (hookpipe.workers.dlq_session.LOCK_PREFIX).
DLQ_LOCK_PREFIX = "hookpipe.dlq-lock."
# Delayed-retry queues, one per delay of HOOKPIPE_RETRY_DELAYS: hookpipe.retry.1000ms, ...
RETRY_QUEUES = re.escape(c.RETRY_PREFIX) + r"\.[0-9]+ms"
NOTHING = "^$"


def password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _names(*names: str, patterns: tuple[str, ...] = ()) -> str:
    """A permission regex matching exactly these names (and these patterns), nothing else."""
    return "^(" + "|".join((*(re.escape(n) for n in names), *patterns)) + ")$"


def permissions() -> dict[str, tuple[str, str, str]]:
    """(configure, write, read) per user."""
    handled = handled_queues()
    dlqs = tuple(q + c.DLQ_SUFFIX for q in handled)
    exchanges = (
        c.ACCEPTED_EXCHANGE,
        c.EVENTS_EXCHANGE,
        c.UNROUTED_EXCHANGE,
        c.DEAD_LETTER_EXCHANGE,
        c.REQUEUE_EXCHANGE,
        c.RETRY_PREFIX,
    )
    # Every queue of the topology (the exchange and the queue hookpipe.unrouted share a name).
    queues = (c.ARCHIVE_STREAM, c.UNROUTED_QUEUE, *handled, *dlqs)
    everything = _names(*exchanges, *queues, patterns=(RETRY_QUEUES,))
    # Written to: the exchanges the topology names as alternate or dead-letter exchanges, the
    # requeue exchange a replay publishes to, every queue (queue.bind) and hookpipe.events (the
    # destination of an exchange binding). Not hookpipe.accepted nor hookpipe.retry: the
    # operator binds from them (read) but publishes to neither.
    operator_writes = _names(
        c.EVENTS_EXCHANGE,
        c.UNROUTED_EXCHANGE,
        c.DEAD_LETTER_EXCHANGE,
        c.REQUEUE_EXCHANGE,
        *queues,
        patterns=(RETRY_QUEUES,),
    )
    return {
        "ingress": (NOTHING, _names(c.ACCEPTED_EXCHANGE, c.UNROUTED_EXCHANGE), NOTHING),
        "worker": (NOTHING, _names(c.RETRY_PREFIX, c.DEAD_LETTER_EXCHANGE), _names(*handled)),
        "operator": (
            # Declare everything, and take and drop a DLQ's lock (an exclusive queue).
            _names(*exchanges, *queues, patterns=(RETRY_QUEUES, re.escape(DLQ_LOCK_PREFIX) + ".+")),
            operator_writes,
            everything,
        ),
    }


def build() -> dict[str, Any]:
    """The whole definitions document: vhost, users, permissions and the topology."""
    return {
        "rabbit_version": RABBITMQ_VERSION,
        "vhosts": [{"name": VHOST}],
        "users": [
            {
                "name": user,
                "password_hash": password_hash(password, salt),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": USER_TAGS.get(user, []),
            }
            for user, (password, salt) in PLACEHOLDER_USERS.items()
        ],
        "permissions": [
            {"user": user, "vhost": VHOST, "configure": cfg, "write": write, "read": read}
            for user, (cfg, write, read) in permissions().items()
        ],
        **definitions(Settings(), VHOST),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
