"""Per-tenant quotas: stored upload bytes and /predict requests per second, and the lock the
active-jobs limit (app/jobs/quota.py, with its domain) shares.

Admins (and every request while authentication is off) are not limited. Over a quota the api
answers 429 with `Retry-After`. The predict rate is counted in each api process, so with
`CLIPFT_API_WORKERS` processes a tenant may reach that many times the rate.

The upload quota counts what each dataset keeps on disk (its stored PNGs and manifest, which
can be many times its zip) plus the bytes reserved by uploads still in progress: an upload
reserves its body's size under the tenant's lock before the body is read, and swaps the
reservation for its dataset's stored size, under the lock again, once the images are stored.

The stored-bytes quota counts everything the tenant keeps on the data disk (app/auth/usage.py:
datasets, their prepared arrays, models, checkpoints, and the same upload reservations). Over
it uploads and new jobs (and retries) are refused, under the same lock; a running job goes on.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, false, func, select, update
from sqlalchemy.orm import Session

from app.auth.usage import StoredUsage, stored_usage
from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.principal import Principal
from app.orm.base import utcnow
from app.orm.tables import Job, UploadReservation

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
    """The body bytes this upload may send (429 when they do not fit in the tenant's quotas).

    Under a quota they are reserved for it: the caller commits the reservation before reading
    the body, so that concurrent uploads see it, and `settle_upload` or `release_upload` ends it.
    A body of undeclared length may send, and reserves, what the quotas have left.
    """
    max_bytes = settings.max_upload_bytes
    upload_limit, stored_limit = settings.tenant_max_upload_bytes, settings.tenant_max_stored_bytes
    if principal.admin or (upload_limit is None and stored_limit is None):
        return max_bytes
    lock_tenant_quotas(session, principal.tenant)
    session.execute(
        delete(UploadReservation).where(
            UploadReservation.tenant == principal.tenant,
            UploadReservation.created_at < live_reservations_since(settings),
        )
    )
    usage = _usage(session, settings, principal.tenant)
    upload_left = max_bytes if upload_limit is None else upload_limit - _upload_held(usage)
    stored_left = max_bytes if stored_limit is None else stored_limit - usage.total
    left = min(upload_left, stored_left)
    wanted = min(declared_bytes or max_bytes, max_bytes)
    if declared_bytes is None:
        wanted = min(wanted, left)
    if stored_left <= 0 or wanted > stored_left:
        raise stored_quota_exceeded(principal, stored_limit or 0, usage, needed=wanted)
    if upload_left <= 0 or wanted > upload_left:
        raise upload_quota_exceeded(principal, upload_limit or 0)
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
    upload_limit, stored_limit = settings.tenant_max_upload_bytes, settings.tenant_max_stored_bytes
    if principal.admin or (upload_limit is None and stored_limit is None):
        return
    lock_tenant_quotas(session, principal.tenant)
    others = _usage(session, settings, principal.tenant, excluding_reservation=dataset_id)
    if stored_limit is not None and others.total + stored_bytes > stored_limit:
        raise stored_quota_exceeded(principal, stored_limit, others, needed=stored_bytes)
    upload_others = _upload_held(others)
    if upload_limit is not None and upload_others + stored_bytes > upload_limit:
        raise TooManyRequests(
            f"tenant {principal.tenant} would store more than its {upload_limit} bytes of "
            f"uploads: this dataset's stored images take {stored_bytes} bytes and "
            f"{max(0, upload_limit - upload_others)} are left; delete datasets it no longer needs",
            retry_after_seconds=UPLOAD_RETRY_SECONDS,
        )
    release_upload(session=session, dataset_id=dataset_id)


def release_upload(*, session: Session, dataset_id: str) -> None:
    """End the upload's reservation (there is none without a quota)."""
    session.execute(delete(UploadReservation).where(UploadReservation.id == dataset_id))


def check_room_to_store(*, session: Session, settings: Settings, principal: Principal) -> None:
    """429 when the tenant already stores its `tenant_max_stored_bytes`: new work (a job, which
    writes checkpoints and a model) waits until it deletes something. Running jobs go on."""
    limit = settings.tenant_max_stored_bytes
    if limit is None or principal.admin:
        return
    lock_tenant_quotas(session, principal.tenant)
    usage = _usage(session, settings, principal.tenant)
    if usage.total >= limit:
        raise stored_quota_exceeded(principal, limit, usage, needed=None)


def _usage(
    session: Session, settings: Settings, tenant: str, excluding_reservation: str | None = None
) -> StoredUsage:
    return stored_usage(
        session=session,
        tenant=tenant,
        reservations_since=live_reservations_since(settings),
        excluding_reservation=excluding_reservation,
    )


def _upload_held(usage: StoredUsage) -> int:
    """What counts against the upload quota: datasets' stored bytes and uploads in progress."""
    return usage.datasets + usage.uploads


def live_reservations_since(settings: Settings) -> datetime:
    """An upload's process that died left its reservation behind; after the janitor's grace
    (its half-written folder is removed then too) the reservation no longer counts."""
    return utcnow() - timedelta(seconds=settings.orphan_upload_grace_seconds)


def upload_quota_exceeded(principal: Principal, limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"tenant {principal.tenant} would store more than its {limit} bytes of uploads; delete "
        "datasets it no longer needs",
        retry_after_seconds=UPLOAD_RETRY_SECONDS,
    )


def body_over_quota(principal: Principal, settings: Settings) -> TooManyRequests:
    """An upload of undeclared length sent more than its reservation: the quotas' room."""
    if settings.tenant_max_upload_bytes is not None:
        return upload_quota_exceeded(principal, settings.tenant_max_upload_bytes)
    return TooManyRequests(
        f"tenant {principal.tenant} would store more than its {settings.tenant_max_stored_bytes} "
        "bytes on the server; delete models, jobs or datasets it no longer needs (GET /usage "
        "shows what it stores)",
        retry_after_seconds=UPLOAD_RETRY_SECONDS,
    )


def stored_quota_exceeded(
    principal: Principal, limit: int, usage: StoredUsage, *, needed: int | None
) -> TooManyRequests:
    wants = "" if needed is None else f", and this upload needs {needed} more"
    return TooManyRequests(
        f"tenant {principal.tenant} stores {usage.total} bytes of its {limit} on the server "
        f"({usage.summary()}){wants}; delete models, jobs or datasets it no longer needs "
        "(GET /usage shows what it stores)",
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
