"""What a delivery sends: its JSON body, and the signature that proves clipft sent it.

    Clipft-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

The body is the same bytes on every attempt; `t` is the attempt's time, so a receiver can
refuse old replays. docs/webhooks.md shows the check a receiver makes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any

SIGNATURE_HEADER = "Clipft-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def iso_time(moment: datetime) -> str:
    """ISO 8601 in UTC, as the API writes its times."""
    return moment.isoformat().replace("+00:00", "Z")


def body(*, delivery_id: str, type: str, created: datetime, data: dict[str, Any]) -> bytes:
    """The delivery's JSON: its id (the same on every attempt), the event, when, the resource."""
    envelope = {"id": delivery_id, "type": type, "created": iso_time(created), "data": data}
    return json.dumps(envelope, separators=(",", ":")).encode()


def signature(*, secret: str, timestamp: int, payload: bytes) -> str:
    """The `Clipft-Signature` header's value for `payload` sent at `timestamp`."""
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
