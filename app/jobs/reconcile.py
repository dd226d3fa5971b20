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
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import rows_updated, session_scope
from app.core.queue import send_train_task, waiting_job_ids
from app.jobs.events import add_event
from app.jobs.janitor import JanitorReport, sweep
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
    """Fix stale jobs in the session; the caller commits, then sends `report.resend`.

    `in_broker` holds the ids of jobs the broker still has a message for (None: unknown); a
    queued job that waited long is re-sent only when its message is not there.
    """
    report = ReconcileReport()
    stale_before = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    stale_jobs = session.scalars(
        select(Job).where(Job.status == "running", Job.heartbeat_at < stale_before)
    ).all()
    for job in stale_jobs:
        _recover_stale_job(session, job, now, stale_before, report)
    resend_before = now - timedelta(seconds=settings.queued_resend_after_seconds)
    waiting = session.scalars(
        select(Job).where(Job.status == "queued", Job.enqueued_at < resend_before)
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
    if job.cancel_requested:
        status, bucket, error = "cancelled", report.cancelled, None
    elif job.attempt < job.max_attempts:
        status, bucket, error = "queued", report.requeued, None
    else:
        status, bucket = "failed", report.failed
        error = (
            f"worker lost: no heartbeat for {silent_for:.0f}s "
            f"on attempt {job.attempt} of {job.max_attempts}"
        )
    values: dict[str, object] = {"status": status, "lease_owner": None}
    if status == "queued":
        values["enqueued_at"] = now
    else:
        values.update(finished_at=now, error=error)
    # Only if still stale: the worker may have sent a heartbeat since we read the row.
    changed = rows_updated(
        session,
        update(Job)
        .where(Job.id == job.id, Job.status == "running", Job.heartbeat_at < stale_before)
        .values(**values),
    )
    if not changed:
        return
    bucket.append(job.id)
    if status == "queued":
        report.resend.append(job.id)
    message = f"worker silent for {silent_for:.0f}s; job {status}"
    add_event(session, job_id=job.id, type="status", message=message, data={"status": status})


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
        try:
            send_train_task(
                broker_url=str(settings.redis_url), queue=settings.train_queue, job_id=job_id
            )
        except Exception:
            logger.exception("reconciler could not send job %s", job_id)
    return report
