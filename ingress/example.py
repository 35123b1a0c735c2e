"""Helpers of the providers' signers: example bodies changed before they are signed."""

from __future__ import annotations

from typing import Any

import orjson


def with_fields(body: bytes, **fields: Any) -> bytes:
    """The JSON body with these top-level fields set."""
    document = orjson.loads(body)
    document.update(fields)
    return orjson.dumps(document)
