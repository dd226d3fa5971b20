"""HTTP routes for jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.auth.requests import PrincipalDep
from app.core import storage
from app.http.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
from app.jobs import service
from app.jobs.lifecycle import JobStatus
from app.jobs.schemas import JobCreate, JobCreated, JobEventPublic, JobList, JobPublic
from app.jobs.stream import job_stream
from app.orm import Job
from app.webhooks.schemas import WebhookCreated

router = APIRouter(prefix="/jobs", tags=["jobs"])


def get_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> Job:
    return service.get(session=session, job_id=job_id, principal=principal)


JobDep = Annotated[Job, Depends(get_job)]


@router.post("", status_code=201, response_model=JobCreated)
def create_job(
    job_in: JobCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> JSONResponse:
    """Start fine-tuning: the job is recorded as queued, then handed to the workers."""
    # Sent to the workers when the session commits, before the response (app/jobs/dispatch.py).
    created = service.create(session=session, settings=settings, job_in=job_in, principal=principal)
    # The job as `GET /jobs/{id}` shows it; `webhook` only with a webhook, its secret shown once.
    body = JobPublic.model_validate(created.job).model_dump(mode="json")
    if created.webhook is not None:
        body["webhook"] = WebhookCreated.model_validate(created.webhook).model_dump(mode="json")
    return JSONResponse(body, status_code=201)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> JobList:
    """List jobs, newest first, optionally filtered by status."""
    jobs, total = service.list_jobs(
        session=session, principal=principal, status=status, limit=limit, offset=offset
    )
    return JobList(items=[JobPublic.model_validate(job) for job in jobs], total=total)


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job: JobDep) -> Job:
    """A job with its progress and latest metrics."""
    return job


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job: JobDep, session: SessionDep) -> Job:
    """Cancel a queued or running job; a finished one answers 409."""
    return service.cancel(session=session, job=job)


@router.post("/{job_id}/retry", response_model=JobPublic)
def retry_job(
    job: JobDep, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Job:
    """Queue a failed or cancelled job again (after a full disk, say): the next attempt
    resumes from its newest checkpoint. 409 for a job that is queued, running or succeeded."""
    return service.retry(session=session, settings=settings, job=job, principal=principal)


@router.get("/{job_id}/report", response_model=dict[str, Any])
def read_job_report(job: JobDep) -> dict[str, Any]:
    """What the job gained and lost: base against fine-tuned on val, retention, WiSE-FT."""
    return service.report(job=job)


@router.get("/{job_id}/events", response_model=list[JobEventPublic])
def list_job_events(job: JobDep, session: SessionDep) -> list[JobEventPublic]:
    """Status changes, epoch metrics and checkpoints, oldest first."""
    events = service.list_events(session=session, job_id=job.id)
    return [JobEventPublic.model_validate(event) for event in events]


@router.delete("/{job_id}", status_code=204)
def delete_job(job: JobDep, session: SessionDep, settings: SettingsDep, request: Request) -> None:
    """Delete a finished job: its row, events, checkpoints and files, here and in the object
    store (409 while it is queued or running, or while its model is registered)."""
    job_id = job.id
    service.delete(session=session, job=job)
    session.commit()
    storage.discard_dir(storage.job_dir(settings.data_dir, job_id))
    service.unpublish_job(request.app.state.object_store, job_id)


@router.get(
    "/{job_id}/events/stream",
    response_model=None,
    responses={
        200: {
            "description": "Server-sent events: `job_event` (id = the event's id), `progress` "
            "and, once the job has finished, `end`.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_job_events(
    job: JobDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        int | None, Header(ge=0, le=2**63 - 1, description="Resume after this event id.")
    ] = None,
) -> StreamingResponse:
    """Live progress: the job's events and progress as they happen (server-sent events).
    A reconnecting client sends `Last-Event-ID` and gets only what it missed."""
    return StreamingResponse(
        job_stream(settings, job.id, last_event_id or 0),
        media_type="text/event-stream",
        # Proxies must pass each message on at once.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
