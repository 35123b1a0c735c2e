"""Reading and copying the messages the ingress publishes: shared by the workers and `hookpipe dlq`.

Headers come from whoever published the message (the ingress, a worker, the broker, a person
with the management UI), so every reader here takes odd types in its stride and returns None.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from hookpipe import constants as c
from hookpipe.workers.errors import PermanentError


class MalformedMessage(PermanentError):
    """The message lacks what the ingress always sets (message_id, type): it cannot be handled."""


def now_ms() -> int:
    """Now, in milliseconds since the epoch: the unit of our time headers."""
    return time.time_ns() // 1_000_000


def text_header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header's text (bytes decoded as UTF-8); None if missing, empty or not text."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None


def int_header(headers: Mapping[str, Any], name: str) -> int | None:
    """A header's whole number, sent as a number or as its digits; None if it is neither."""
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def identity_of(message_id: str | None, headers: Mapping[str, Any]) -> tuple[str, str]:
    """(provider, event id), from message_id "provider:event_id" or else the identity headers."""
    if message_id:
        provider, sep, event_id = message_id.partition(":")
        if sep and provider and event_id:
            return provider, event_id
    header_provider = text_header(headers, c.HEADER_PROVIDER)
    header_event_id = text_header(headers, c.HEADER_EVENT_ID)
    if header_provider and header_event_id:
        return header_provider, header_event_id
    if message_id:
        raise MalformedMessage("message_id is not provider:event_id, and no identity headers")
    raise MalformedMessage("the message has no message_id and no identity headers")


def identity_if_any(
    message_id: str | None, headers: Mapping[str, Any]
) -> tuple[str, str] | tuple[None, None]:
    """identity_of, or (None, None) for a message that has none (what an operator's listing
    shows of it, instead of refusing it)."""
    try:
        return identity_of(message_id, headers)
    except MalformedMessage:
        return None, None


def copy_for_republish(
    message: AbstractIncomingMessage,
    headers: dict[str, Any],
    expiration: timedelta | None = None,
) -> aio_pika.Message:
    """The same body and properties with new headers, persistent. user_id is left out: the broker
    checks it against the publishing user, who may not be the one that first published it."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=expiration,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
