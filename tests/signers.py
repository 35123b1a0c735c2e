"""Signing as each provider documents it, written apart from the ingress's own code.

The tests sign with these, so a mistake in the ingress's verification cannot cancel out
against the same mistake in the signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def jodo(body: bytes, secret: str) -> dict[str, str]:
    """Jodo: X-Jodo-Signature is the lowercase hex HMAC-SHA256 of the raw body."""
    return {"X-Jodo-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def dreamclass_signature(event_id: str, secret: str, *, key_base64: bool = False) -> str:
    """DreamClass: base64 of the raw HMAC-SHA256 digest of the envelope's `id`."""
    key = base64.b64decode(secret) if key_base64 else secret.encode()
    return base64.b64encode(hmac.new(key, event_id.encode(), hashlib.sha256).digest()).decode()


def rapyd(
    body: bytes, *, url: str, access_key: str, secret_key: str, salt: str, timestamp: int
) -> dict[str, str]:
    """Rapyd: base64 of the hex HMAC of url + salt + timestamp + access key + secret key + body."""
    to_sign = (url + salt + str(timestamp) + access_key + secret_key).encode() + body
    hex_digest = hmac.new(secret_key.encode(), to_sign, hashlib.sha256).hexdigest()
    return {
        "salt": salt,
        "timestamp": str(timestamp),
        "signature": base64.b64encode(hex_digest.encode()).decode(),
    }


def standard_webhooks(
    body: bytes, *, secret: str, msg_id: str, timestamp: int, prefix: str = "svix"
) -> dict[str, str]:
    """Flexprice (Standard Webhooks): v1,base64(HMAC(base64-decoded key, id.timestamp.body))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    sig = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(timestamp),
        f"{prefix}-signature": f"v1,{sig}",
    }
