"""API keys: made, listed and revoked from the command line; checked on every request.

A key reads `clipft_<id>_<secret>`. Only the SHA-256 of the secret is stored: the secret is 32
random bytes, so a fast hash is as safe as a slow one, and checking a key costs microseconds.
The id part finds the row without scanning every key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.principal import Principal
from app.core.storage import new_id
from app.orm import ApiKey
from app.orm.base import utcnow

KEY_PREFIX = "clipft_"
KEY_PATTERN = re.compile(r"^clipft_([0-9a-f]{32})_([A-Za-z0-9_-]{20,100})$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    record: ApiKey


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(*, session: Session, name: str, tenant: str, admin: bool) -> NewKey:
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(
            f"tenant {tenant!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    if not name.strip():
        raise ValueError("a key needs a name")
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        id=new_id(), name=name.strip(), tenant=tenant, admin=admin, secret_sha256=_digest(secret)
    )
    session.add(record)
    session.flush()
    return NewKey(key=f"{KEY_PREFIX}{record.id}_{secret}", record=record)


def list_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(*, session: Session, key_id: str, now: datetime | None = None) -> ApiKey | None:
    """Mark the key revoked (kept, so the listing still shows it); None if there is none."""
    record = session.get(ApiKey, key_id)
    if record is not None and record.revoked_at is None:
        record.revoked_at = now or utcnow()
    return record


def verify_key(*, session: Session, key: str) -> Principal | None:
    """The principal a presented key stands for, or None if it is unknown, wrong or revoked."""
    match = KEY_PATTERN.match(key)
    if match is None:
        return None
    key_id, secret = match.groups()
    record = session.get(ApiKey, key_id)
    if record is None or record.revoked_at is not None:
        return None
    if not hmac.compare_digest(record.secret_sha256, _digest(secret)):
        return None
    return Principal(tenant=record.tenant, admin=record.admin, key_id=record.id)
