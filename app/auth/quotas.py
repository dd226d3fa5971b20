"""Per-tenant quotas: stored upload bytes and /predict requests per second, and the lock the
active-jobs limit (app/jobs/quota.py, with its domain) shares.

Admins (and every request while authentication is off) are not limited. Over a quota the api
answers 429 with `Retry-After`. The predict rate is counted in each api process, so with
`CLIPFT_API_WORKERS` processes a tenant may reach that many times the rate.

The upload quota counts what each dataset keeps on disk (its stored PNGs and manifest, which
can be many times its zip) plus the bytes reserved by uploads still in progress: an upload
reserves its body's size under the tenant's lock before the body is read, and swaps the
reservation for its dataset's stored size, under the lock again, once the images are stored.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, false, func, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.principal import Principal
from app.orm.base import utcnow
from app.orm.tables import Dataset, Job, UploadReservation

UPLOAD_RETRY_SECONDS = 3600


def lock_tenant_quotas(session: Session, tenant: str) -> None:
    """Hold the tenant's quota lock until the session's transaction ends: on PostgreSQL a lock
    per tenant, on SQLite the database's one write lock."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(
            select(func.pg_advisory_xact_lock(func.hashtext(f"clipft-quotas:{tenant}")))
        )
    elif dialect == "sqlite":
        # A write that changes nothing still starts SQLite's write transaction, and with it the
        # lock that every other writer waits for (busy_timeout); a plain SELECT takes none, so
        # two requests could both count one place left and both insert.
        session.execute(update(Job).where(false()).values(status=Job.status))


def reserve_upload(
    *,
    session: Session,
    settings: Settings,
    principal: Principal,
    dataset_id: str,
    declared_bytes: int | None,
) -> int:
    """The body bytes this upload may send (429 when they do not fit in the tenant's quota).

    Under a quota they are reserved for it: the caller commits the reservation before reading
    the body, so that concurrent uploads see it, and `settle_upload` or `release_upload` ends it.
    A body of undeclared length may send, and reserves, what the quota has left.
    """
    max_bytes = settings.max_upload_bytes
    limit = settings.tenant_max_upload_bytes
    if limit is None or principal.admin:
        return max_bytes
    lock_tenant_quotas(session, principal.tenant)
    session.execute(
        delete(UploadReservation).where(
            UploadReservation.tenant == principal.tenant,
            UploadReservation.created_at < _live_reservations_since(settings),
        )
    )
    left = limit - bytes_held(session=session, settings=settings, tenant=principal.tenant)
    wanted = min(declared_bytes or max_bytes, max_bytes)
    if declared_bytes is None:
        wanted = min(wanted, left)
    if left <= 0 or wanted > left:
        raise upload_quota_exceeded(principal, limit)
    session.add(UploadReservation(id=dataset_id, tenant=principal.tenant, reserved_bytes=wanted))
    session.flush()
    return wanted


def settle_upload(
    *,
    session: Session,
    settings: Settings,
    principal: Principal,
    dataset_id: str,
    stored_bytes: int,
) -> None:
    """Swap the upload's reservation for the bytes its dataset stores, or 429 when those do not
    fit; the tenant's lock is held until the caller's transaction (which adds the dataset) ends."""
    limit = settings.tenant_max_upload_bytes
    if limit is None or principal.admin:
        return
    lock_tenant_quotas(session, principal.tenant)
    others = bytes_held(
        session=session, settings=settings, tenant=principal.tenant, excluding=dataset_id
    )
    if others + stored_bytes > limit:
        raise TooManyRequests(
            f"tenant {principal.tenant} would store more than its {limit} bytes of uploads: "
            f"this dataset's stored images take {stored_bytes} bytes and {max(0, limit - others)} "
            "are left; delete datasets it no longer needs",
            retry_after_seconds=UPLOAD_RETRY_SECONDS,
        )
    release_upload(session=session, dataset_id=dataset_id)


def release_upload(*, session: Session, dataset_id: str) -> None:
    """End the upload's reservation (there is none without a quota)."""
    session.execute(delete(UploadReservation).where(UploadReservation.id == dataset_id))


def bytes_held(
    *, session: Session, settings: Settings, tenant: str, excluding: str | None = None
) -> int:
    """What counts against the tenant's upload quota: its datasets' stored bytes and what its
    uploads in progress reserved (but `excluding`'s)."""
    stored = session.scalar(
        select(func.coalesce(func.sum(Dataset.stored_bytes), 0)).where(Dataset.tenant == tenant)
    )
    reserved = session.scalar(
        select(func.coalesce(func.sum(UploadReservation.reserved_bytes), 0)).where(
            UploadReservation.tenant == tenant,
            UploadReservation.created_at >= _live_reservations_since(settings),
            UploadReservation.id != (excluding or ""),
        )
    )
    return int(stored or 0) + int(reserved or 0)


def _live_reservations_since(settings: Settings) -> datetime:
    # An upload's process that died left its reservation behind; after the janitor's grace
    # (its half-written folder is removed then too) the reservation no longer counts.
    return utcnow() - timedelta(seconds=settings.orphan_upload_grace_seconds)


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
