"""Writes deploy/rabbitmq/definitions.json from hookpipe's own topology plan.

Run `.venv/bin/python deploy/gen_definitions.py` after changing the topology; a test checks
that the committed file is what this script writes.

Users, each with the least privilege its role needs:
- ingress:  may only publish to hookpipe.events.
- worker:   may consume the handled queues and publish retries and dead letters.
- operator: `hookpipe dlq ...` (read DLQs, republish through hookpipe.requeue) and
            `hookpipe topology declare`.
Their passwords here are placeholders for a first start of deploy/compose.yaml: change them
with `rabbitmqctl change_password USER NEW` before anything real goes through.
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
TARGET = Path(__file__).parent / "rabbitmq" / "definitions.json"
# Fixed salts keep the generated file stable, so the drift test can compare it byte for byte.
PLACEHOLDER_USERS = {
    "ingress": ("ingress-change-me", b"hpi1"),
    "worker": ("worker-change-me", b"hpw1"),
    "operator": ("operator-change-me", b"hpo1"),
}


def password_hash(password: str, salt: bytes) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _names(*names: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def build() -> dict[str, Any]:
    """The whole definitions document: vhost, users, permissions and the topology."""
    handled = handled_queues()
    dlqs = tuple(q + c.DLQ_SUFFIX for q in handled)
    permissions = {
        # Publishing needs write on the exchange only; no configure (the topology is loaded
        # from this file), no read.
        "ingress": ("^$", _names(c.EVENTS_EXCHANGE), "^$"),
        # Consuming needs read on the queues; retries and dead letters are publishes.
        "worker": ("^$", _names(c.RETRY_PREFIX, c.DEAD_LETTER_EXCHANGE), _names(*handled)),
        "operator": (
            ".*",
            _names(c.REQUEUE_EXCHANGE, c.DEAD_LETTER_EXCHANGE, *dlqs),
            _names(*dlqs),
        ),
    }
    return {
        "rabbit_version": "3.10.0",
        "vhosts": [{"name": VHOST}],
        "users": [
            {
                "name": user,
                "password_hash": password_hash(password, salt),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for user, (password, salt) in PLACEHOLDER_USERS.items()
        ],
        "permissions": [
            {"user": user, "vhost": VHOST, "configure": cfg, "write": write, "read": read}
            for user, (cfg, write, read) in permissions.items()
        ],
        **definitions(Settings(), VHOST),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
