"""Who sent a request: the principal behind its `Authorization: Bearer <key>` header.

With authentication off (`auth_required` false: dev, demos) every request acts as an admin of
the default tenant. Checked keys are remembered for `auth_cache_seconds`, so /predict does not
pay a database round trip per request.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from app.auth.keys import verify_key
from app.core.config import Settings
from app.core.db import session_scope
from app.core.errors import Unauthorized
from app.core.expiring import ExpiringCache
from app.core.principal import Principal
from app.http.deps import SettingsDep
from app.orm.tables import DEFAULT_TENANT

OPEN_ACCESS = Principal(tenant=DEFAULT_TENANT, admin=True)


# Principals of recently checked keys, by the key's SHA-256; only good keys are kept.
KeyCache = ExpiringCache[str, Principal]


# Declares the scheme in the OpenAPI schema; the check itself is below (auto_error=False), so
# that a missing key answers this api's own 401 rather than FastAPI's 403.
bearer_scheme = HTTPBearer(
    auto_error=False, description="An API key from `clipft keys create`.", scheme_name="ApiKey"
)


async def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    # Async, so that a remembered key costs no hop to a worker thread (FastAPI runs a plain `def`
    # dependency in one); only a key not seen lately goes to the database, in a thread.
    if not settings.auth_required:
        return OPEN_ACCESS
    if credentials is None or not credentials.credentials.strip():
        raise Unauthorized("send an API key: `Authorization: Bearer <key>`")
    key = credentials.credentials.strip()
    cache: KeyCache = request.app.state.key_cache
    digest = hashlib.sha256(key.encode()).hexdigest()
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_look_up_key, settings, key)
        if principal is None:
            raise Unauthorized("this API key is unknown or revoked")
        if settings.auth_cache_seconds > 0:
            cache.put(digest, principal, settings.auth_cache_seconds)
    return principal


def _look_up_key(settings: Settings, key: str) -> Principal | None:
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        return verify_key(session=session, key=key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
