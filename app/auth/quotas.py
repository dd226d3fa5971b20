"""Per-tenant quotas: stored upload bytes and /predict requests per second.

The active-jobs limit belongs to its domain: app/jobs/quota.py.

Admins (and every request while authentication is off) are not limited. Over a quota the api
answers 429 with `Retry-After`. The predict rate is counted in each api process, so with
`CLIPFT_API_WORKERS` processes a tenant may reach that many times the rate.
"""

from __future__ import annotations

import math
import threading
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.principal import Principal
from app.orm.models import Dataset

UPLOAD_RETRY_SECONDS = 3600


def upload_allowance(*, session: Session, settings: Settings, principal: Principal) -> int | None:
    """Bytes the tenant may still upload (None: no limit); 429 when nothing is left."""
    limit = settings.tenant_max_upload_bytes
    if limit is None or principal.admin:
        return None
    used = session.scalar(
        select(func.coalesce(func.sum(Dataset.upload_bytes), 0)).where(
            Dataset.tenant == principal.tenant
        )
    )
    left = limit - int(used or 0)
    if left <= 0:
        raise upload_quota_exceeded(principal, limit)
    return left


def upload_quota_exceeded(principal: Principal, limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"tenant {principal.tenant} would store more than its {limit} bytes of uploads; delete "
        "datasets it no longer needs",
        retry_after_seconds=UPLOAD_RETRY_SECONDS,
    )


class PredictRateLimiter:
    """A token bucket per tenant: `rate` requests a second, bursts of up to `rate`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, last refill)

    def take(self, *, settings: Settings, principal: Principal) -> None:
        rate = settings.tenant_predict_per_second
        if rate is None or principal.admin:
            return
        capacity = max(rate, 1.0)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(principal.tenant, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[principal.tenant] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise TooManyRequests(
                    f"tenant {principal.tenant} is over its {rate:g} /predict requests per second",
                    retry_after_seconds=wait,
                )
            self._buckets[principal.tenant] = (tokens - 1.0, now)
