"""The reconciler: the database is the truth, the broker only wakes workers up.

It re-sends `queued` jobs that waited too long (a lost message, a broker that was down) and puts
`running` jobs whose heartbeat went stale (a killed worker) back to `queued`, until they run out
of attempts and fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import session_scope
from app.core.queue import waiting_job_ids
from app.jobs import lifecycle
from app.jobs.dispatch import send_after_commit
from app.jobs.janitor import JanitorReport, sweep
from app.jobs.lifecycle import JobStatus
from app.orm import Job
from app.orm.base import utcnow

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    resend: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    janitor: JanitorReport = field(default_factory=JanitorReport)


def reconcile(
    *,
    session: Session,
    settings: Settings,
    now: datetime,
    in_broker: set[str] | None = None,
) -> ReconcileReport:
    """Fix stale jobs in the session; the caller sends `report.resend` once it commits.

    `in_broker` holds the ids of jobs the broker still has a message for (None: unknown); a
    queued job that waited long is re-sent only when its message is not there.
    """
    report = ReconcileReport()
    stale_before = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    stale_jobs = session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < stale_before)
    ).all()
    for job in stale_jobs:
        _recover_stale_job(session, job, now, stale_before, report)
    resend_before = now - timedelta(seconds=settings.queued_resend_after_seconds)
    waiting = session.scalars(
        select(Job).where(Job.status == JobStatus.QUEUED, Job.enqueued_at < resend_before)
    ).all()
    for job in waiting:
        job.enqueued_at = now
        if in_broker is None or job.id not in in_broker:
            report.resend.append(job.id)
    return report


def _recover_stale_job(
    session: Session, job: Job, now: datetime, stale_before: datetime, report: ReconcileReport
) -> None:
    silent_for = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else 0.0
    error = None
    if job.cancel_requested:
        status, bucket = JobStatus.CANCELLED, report.cancelled
    elif job.attempt < job.max_attempts:
        status, bucket = JobStatus.QUEUED, report.requeued
    else:
        status, bucket = JobStatus.FAILED, report.failed
        error = (
            f"worker lost: no heartbeat for {silent_for:.0f}s "
            f"on attempt {job.attempt} of {job.max_attempts}"
        )
    # Only if still stale: the worker may have sent a heartbeat since we read the row.
    if not lifecycle.take_from_silent_worker(
        session,
        job,
        now=now,
        stale_before=stale_before,
        silent_for=silent_for,
        to=status,
        error=error,
    ):
        return
    bucket.append(job.id)
    if status == JobStatus.QUEUED:
        report.resend.append(job.id)


def messages_in_broker(settings: Settings) -> set[str] | None:
    """Job ids the broker holds a message for; None when it cannot say (then every waiting
    job is re-sent, as the safe side)."""
    if not settings.redis_url:
        return None
    try:
        return waiting_job_ids(broker_url=settings.redis_url, queue=settings.train_queue)
    except redis.RedisError as error:
        logger.warning("could not read the broker's queue: %s", error)
        return None


def reconcile_once(settings: Settings) -> ReconcileReport:
    """One pass in its own transaction, then the re-sends (after the commit)."""
    in_broker = messages_in_broker(settings)
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        now = utcnow()
        report = reconcile(session=session, settings=settings, now=now, in_broker=in_broker)
        report.janitor = sweep(session=session, settings=settings, now=now)
        for job_id in report.resend:
            send_after_commit(session, settings, job_id)
    return report
