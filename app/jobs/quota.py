"""The per-tenant limit on active (queued and running) jobs.

Admins (and every request while authentication is off) are not limited. Over the limit the api
answers 429 with `Retry-After`.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.quotas import lock_tenant_quotas
from app.core.config import Settings
from app.core.errors import TooManyRequests
from app.core.principal import Principal
from app.jobs.lifecycle import JobStatus
from app.orm.tables import Job

ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
# A job takes minutes or more: asking again sooner than this cannot succeed.
ACTIVE_JOBS_RETRY_SECONDS = 60


def check_active_jobs(*, session: Session, settings: Settings, principal: Principal) -> None:
    """429 when the tenant already has its limit of queued and running jobs.

    The count runs under a lock held until the caller's transaction (which inserts or requeues
    the job) ends, so two requests at once cannot both pass with one place left: on PostgreSQL
    a lock per tenant, on SQLite the database's one write lock.
    """
    limit = settings.tenant_max_active_jobs
    if limit is None or principal.admin:
        return
    lock_tenant_quotas(session, principal.tenant)
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant == principal.tenant, Job.status.in_(ACTIVE_STATUSES))
    )
    if (active or 0) >= limit:
        raise TooManyRequests(
            f"tenant {principal.tenant} has {active} queued or running jobs, its limit; wait for "
            "one to finish or cancel one",
            retry_after_seconds=ACTIVE_JOBS_RETRY_SECONDS,
        )
