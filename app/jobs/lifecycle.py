"""The job lifecycle in one place: its statuses and one function per status change (the event
types it writes are in app/jobs/event_types.py).

Each change is one conditional UPDATE (its fence: the status it leaves and, for a running
job, the attempt's lease or the staleness that justified taking it away) plus the event that
records it, in the caller's transaction. A change whose fence no longer holds writes nothing
and returns False: someone else moved the job first.

    queued ──claim──▶ running ──succeed──▶ succeeded
      │  ▲              │ ├──fail────────▶ failed
      │  ├──requeue─────┤ └──end_cancelled▶ cancelled
      │  │  (its worker went silent, or a rank of its run was killed: the attempt counts)
      │  └──release─────┘ (its worker shuts down: the attempt is not counted)
      └──cancel_queued──────────────────▶ cancelled
    failed, cancelled ──retry──▶ queued (the next attempt resumes from the last checkpoint)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.db import rows_updated
from app.jobs.event_types import EventType
from app.jobs.events import add_event
from app.jobs.schemas import JobPublic
from app.jobs.status import FINISHED, RETRYABLE, JobStatus
from app.orm import Job
from app.webhooks.event_types import WebhookEvent
from app.webhooks.outbox import record_event


def _change(
    session: Session,
    job_id: str,
    *,
    fence: list[Any],
    values: dict[str, Any],
    message: str,
    data: dict[str, Any],
) -> bool:
    changed = rows_updated(session, update(Job).where(Job.id == job_id, *fence).values(**values))
    if changed:
        add_event(session, job_id=job_id, type=EventType.STATUS, message=message, data=data)
        if values.get("status") in FINISHED:
            _announce_end(session, job_id)
    return bool(changed)


def _announce_end(session: Session, job_id: str) -> None:
    """The ended job's webhook deliveries, each carrying the job as `GET /jobs/{id}` shows it."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    record_event(
        session,
        tenant=job.tenant,
        type=WebhookEvent(f"job.{job.status}"),
        subject_id=job.id,
        data=JobPublic.model_validate(job).model_dump(mode="json"),
        job_id=job.id,
    )


def record_queued(session: Session, job: Job) -> None:
    """A new job's first event (the row is inserted as queued by its creator)."""
    add_event(
        session,
        job_id=job.id,
        type=EventType.STATUS,
        message="queued",
        data={"status": JobStatus.QUEUED},
    )


def claim(session: Session, job_id: str, *, owner: str, now: datetime) -> Job | None:
    """queued → running for the attempt holding `owner`; of two claims exactly one wins."""
    won = rows_updated(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_owner=owner,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            error=None,
        ),
    )
    if not won:
        return None
    job = session.get(Job, job_id)
    assert job is not None
    add_event(
        session,
        job_id=job_id,
        type=EventType.STATUS,
        message=f"running (attempt {job.attempt} of {job.max_attempts})",
        data={"status": JobStatus.RUNNING, "attempt": job.attempt},
    )
    return job


def _held_by(owner: str) -> list[Any]:
    """The fence of a running attempt: the job is still running under its lease."""
    return [Job.lease_owner == owner, Job.status == JobStatus.RUNNING]


def succeed(
    session: Session,
    job_id: str,
    *,
    owner: str,
    now: datetime,
    model_id: str,
    report: dict[str, Any] | None,
    message: str,
    data: dict[str, Any],
) -> bool:
    """running → succeeded, if this attempt still holds the job."""
    return _change(
        session,
        job_id,
        fence=_held_by(owner),
        values={
            "status": JobStatus.SUCCEEDED,
            "model_id": model_id,
            "report": report,
            "finished_at": now,
        },
        message=message,
        data={"status": JobStatus.SUCCEEDED, **data},
    )


def fail(session: Session, job_id: str, *, owner: str, now: datetime, error: str) -> bool:
    """running → failed with a public error, if this attempt still holds the job."""
    return _change(
        session,
        job_id,
        fence=_held_by(owner),
        values={"status": JobStatus.FAILED, "finished_at": now, "error": error},
        message=error,
        data={"status": JobStatus.FAILED},
    )


def end_cancelled(session: Session, job_id: str, *, owner: str, now: datetime) -> bool:
    """running → cancelled once the run stopped on request, if this attempt still holds it."""
    return _change(
        session,
        job_id,
        fence=_held_by(owner),
        values={"status": JobStatus.CANCELLED, "finished_at": now},
        message="cancelled",
        data={"status": JobStatus.CANCELLED},
    )


def release(session: Session, job_id: str, *, owner: str, now: datetime) -> bool:
    """running → queued, the attempt not counted: its worker is shutting down (a restart, an
    upgrade), not failing. The next attempt takes the same number and folder and resumes from
    its checkpoints. Refused (False) if this attempt lost the job or a cancel is pending."""
    return _change(
        session,
        job_id,
        fence=[*_held_by(owner), Job.cancel_requested.is_(False)],
        values={
            "status": JobStatus.QUEUED,
            "attempt": Job.attempt - 1,
            "lease_owner": None,
            "enqueued_at": now,
        },
        message="queued again: its worker is shutting down (this attempt is not counted)",
        data={"status": JobStatus.QUEUED},
    )


def requeue_lost_rank(
    session: Session, job_id: str, *, owner: str, now: datetime, reason: str
) -> bool:
    """running → queued, the attempt counted: a rank of its data-parallel run was killed from
    outside (the OOM killer, a lost machine), which another attempt may well survive; it
    resumes from the last checkpoint. Refused (False) if this attempt lost the job, a cancel is
    pending, or the job has used all its attempts (then it fails instead)."""
    return _change(
        session,
        job_id,
        fence=[
            *_held_by(owner),
            Job.cancel_requested.is_(False),
            Job.attempt < Job.max_attempts,
        ],
        values={"status": JobStatus.QUEUED, "lease_owner": None, "enqueued_at": now},
        message=f"queued again: {reason} (the next attempt resumes from the last checkpoint)",
        data={"status": JobStatus.QUEUED},
    )


def cancel_queued(session: Session, job_id: str, *, now: datetime) -> bool:
    """queued → cancelled at once."""
    return _change(
        session,
        job_id,
        fence=[Job.status == JobStatus.QUEUED],
        values={"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": now},
        message="cancelled",
        data={},
    )


def request_cancel(session: Session, job_id: str) -> bool:
    """A running job is flagged; its attempt stops at its next step and ends it cancelled."""
    flagged = rows_updated(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True),
    )
    if flagged:
        add_event(
            session, job_id=job_id, type=EventType.CANCEL_REQUESTED, message="cancel requested"
        )
    return bool(flagged)


def take_from_silent_worker(
    session: Session,
    job: Job,
    *,
    now: datetime,
    stale_before: datetime,
    silent_for: float,
    to: JobStatus,
    error: str | None,
) -> bool:
    """running → queued (another attempt), failed (out of attempts) or cancelled (asked to),
    only if the job's heartbeat is still older than `stale_before`."""
    values: dict[str, Any] = {"status": to, "lease_owner": None}
    if to == JobStatus.QUEUED:
        values["enqueued_at"] = now
    else:
        values.update(finished_at=now, error=error)
    return _change(
        session,
        job.id,
        fence=[Job.status == JobStatus.RUNNING, Job.heartbeat_at < stale_before],
        values=values,
        message=f"worker silent for {silent_for:.0f}s; job {to}",
        data={"status": to},
    )


def retry(session: Session, job: Job, *, now: datetime, attempts: int) -> bool:
    """failed or cancelled → queued, with `attempts` more attempts; the next one resumes from
    the newest checkpoint that earlier attempts left."""
    # Read before the update, which sets the loaded row's status to queued as well; the
    # update holds only while the job is still in the status the event names.
    previous = job.status
    if previous not in RETRYABLE:
        return False
    changed = rows_updated(
        session,
        update(Job)
        .where(Job.id == job.id, Job.status == previous)
        .values(
            status=JobStatus.QUEUED,
            max_attempts=Job.attempt + attempts,
            cancel_requested=False,
            lease_owner=None,
            error=None,
            finished_at=None,
            enqueued_at=now,
        ),
    )
    if changed:
        add_event(
            session,
            job_id=job.id,
            type=EventType.RETRY,
            message=f"retried after {previous}; queued",
            data={"status": JobStatus.QUEUED},
        )
    return bool(changed)
