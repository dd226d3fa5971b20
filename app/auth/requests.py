"""Who sent a request: the principal behind its `Authorization: Bearer <key>` header.

With authentication off (`auth_required` false: dev, demos) every request acts as an admin of
the default tenant. Checked keys are remembered for `auth_cache_seconds`, so /predict does not
pay a database round trip per request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.keys import Principal, verify_key
from app.core.db import session_scope
from app.core.errors import Unauthorized
from app.deps import SettingsDep
from app.orm.models import DEFAULT_TENANT

OPEN_ACCESS = Principal(tenant=DEFAULT_TENANT, admin=True)


class KeyCache:
    """Principals of recently checked keys, by the key's SHA-256; only good keys are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal, seconds: float) -> None:
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (principal, time.monotonic() + seconds)


# Declares the scheme in the OpenAPI schema; the check itself is below (auto_error=False), so
# that a missing key answers this api's own 401 rather than FastAPI's 403.
bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key from `clipft keys create`.", scheme_name="ApiKey"
)


def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if not settings.auth_required:
        return OPEN_ACCESS
    if credentials is None or not credentials.credentials.strip():
        raise Unauthorized("send an API key: `Authorization: Bearer <key>`")
    key = credentials.credentials.strip()
    cache: KeyCache = request.app.state.key_cache
    digest = hashlib.sha256(key.encode()).hexdigest()
    principal = cache.get(digest)
    if principal is None:
        with session_scope(settings.resolved_database_url, settings.database_pool) as session:
            principal = verify_key(session=session, key=key)
        if principal is None:
            raise Unauthorized("this API key is unknown or revoked")
        if settings.auth_cache_seconds > 0:
            cache.put(digest, principal, settings.auth_cache_seconds)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
