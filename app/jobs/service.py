"""Job logic: create, read, list, cancel. Routes commit; a queued job is sent after the commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.quotas import check_room_to_store
from app.core.config import Settings
from app.core.errors import Conflict, Unprocessable
from app.core.objects.store import ObjectStore, ObjectStoreError
from app.core.principal import Principal
from app.core.queries import get_or_404, newest_first_page
from app.core.storage import job_object_prefix, new_id
from app.jobs import lifecycle
from app.jobs.dispatch import send_after_commit
from app.jobs.lifecycle import JobStatus
from app.jobs.quota import check_active_jobs
from app.jobs.schemas import JobCreate, JobProgress
from app.ml.base_models import BaseModelRefused, check_base_model
from app.ml.hyperparameters import HEAD_METHODS
from app.orm import Checkpoint, Dataset, Job, JobEvent, Model, Webhook
from app.orm.base import utcnow
from app.webhooks import service as webhooks

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedJob:
    job: Job
    # The job's own webhook, when `webhook_url` was given (its secret shown once).
    webhook: Webhook | None


def create(
    *, session: Session, settings: Settings, job_in: JobCreate, principal: Principal
) -> CreatedJob:
    """Check the dataset, base model and webhook URL, then record the job as `queued` (with its
    webhook), sent to the workers once the caller commits.

    The job belongs to its dataset's tenant (the caller's own, unless an admin acts for one).
    """
    dataset = get_or_404(session, Dataset, job_in.dataset_id, "dataset", principal=principal)
    check_active_jobs(session=session, settings=settings, principal=principal)
    check_room_to_store(session=session, settings=settings, principal=principal)
    if dataset.status != "ready":
        raise Conflict(f"dataset {dataset.id} is {dataset.status}, not ready")
    try:
        check_base_model(job_in.base_model, settings.base_models_dir, settings.hub_model_allowed)
    except BaseModelRefused as error:
        raise Unprocessable(str(error)) from None
    if job_in.hyperparameters.devices > settings.worker_devices:
        raise Unprocessable(
            f"hyperparameters.devices: {job_in.hyperparameters.devices} asked, but the "
            f"workers have {settings.worker_devices} device(s) each"
        )
    method = job_in.hyperparameters.method
    if method in HEAD_METHODS and dataset.kind != "classification":
        raise Unprocessable(
            f"method {method!r} trains a class head; dataset {dataset.id} holds captions"
        )
    if job_in.hyperparameters.target_precision is not None and dataset.kind != "classification":
        raise Unprocessable(
            f"hyperparameters.target_precision sets an abstain threshold over classes; dataset "
            f"{dataset.id} holds captions"
        )
    if job_in.control_dataset_id is not None:
        check_control_dataset(session=session, job_in=job_in, dataset=dataset)
    if job_in.webhook_url is not None:
        webhooks.check_url(settings=settings, url=job_in.webhook_url, field="webhook_url")
    hyperparameters = job_in.hyperparameters.model_dump()
    now = utcnow()
    job = Job(
        id=new_id(),
        tenant=dataset.tenant,
        name=job_in.name or f"{dataset.name} on {job_in.base_model}",
        status=JobStatus.QUEUED,
        dataset_id=dataset.id,
        base_model=job_in.base_model,
        control_dataset_id=job_in.control_dataset_id,
        hyperparameters=hyperparameters,
        progress=JobProgress(epochs=hyperparameters["epochs"]).model_dump(),
        metrics={},
        max_attempts=settings.job_max_attempts,
        enqueued_at=now,
        created_at=now,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        # The only row the insert refers to that can vanish: a dataset deleted (and committed)
        # since it was read above. (The failed flush has expired the rows read: ids from the
        # request only.)
        named = ", ".join(filter(None, (job_in.dataset_id, job_in.control_dataset_id)))
        raise Conflict(f"dataset {named} was deleted while the job was being created") from None
    lifecycle.record_queued(session, job)
    webhook = None
    if job_in.webhook_url is not None:
        webhook = webhooks.create_for_job(
            session=session,
            tenant=job.tenant,
            job_id=job.id,
            url=job_in.webhook_url,
            events=job_in.webhook_events,
        )
    send_after_commit(session, settings, job.id)
    return CreatedJob(job=job, webhook=webhook)


def check_control_dataset(*, session: Session, job_in: JobCreate, dataset: Dataset) -> None:
    """The control set must be another ready classification set of the same tenant."""
    control = get_or_404(
        session,
        Dataset,
        str(job_in.control_dataset_id),
        "control dataset",
        principal=Principal(tenant=dataset.tenant, admin=False),
    )
    if control.id == job_in.dataset_id:
        raise Unprocessable("control_dataset_id must name a dataset the job does not train on")
    if control.kind != "classification":
        raise Unprocessable(
            f"control dataset {control.id} holds captions; zero-shot accuracy needs classes"
        )
    if control.status != "ready":
        raise Conflict(f"control dataset {control.id} is {control.status}, not ready")


def get(*, session: Session, job_id: str, principal: Principal) -> Job:
    """The job, or a 404."""
    return get_or_404(session, Job, job_id, "job", principal=principal)


def list_jobs(
    *, session: Session, principal: Principal, status: str | None, limit: int, offset: int
) -> tuple[list[Job], int]:
    """Newest first, optionally only those in one status."""
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    return newest_first_page(session, query, Job, principal=principal, limit=limit, offset=offset)


def cancel(*, session: Session, job: Job) -> Job:
    """A queued job ends at once; a running one is flagged and stops at its next step."""
    if job.status in lifecycle.FINISHED:
        raise Conflict(f"job {job.id} is already {job.status}")
    # Conditional updates: the worker may claim the job between our read and this write.
    if not lifecycle.cancel_queued(session, job.id, now=utcnow()) and not (
        lifecycle.request_cancel(session, job.id)
    ):
        session.refresh(job)
        raise Conflict(f"job {job.id} is already {job.status}")
    session.refresh(job)
    return job


def report(*, job: Job) -> dict[str, Any]:
    """The report a succeeded job wrote; 409 before that."""
    if job.report is None:
        if job.status == JobStatus.SUCCEEDED:
            raise Conflict(f"job {job.id} finished before jobs wrote reports")
        raise Conflict(f"job {job.id} is {job.status}; its report is written once it succeeds")
    return job.report


def list_events(*, session: Session, job_id: str) -> list[JobEvent]:
    """The job's events, oldest first."""
    return list(
        session.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        ).all()
    )


def delete(*, session: Session, job: Job) -> None:
    """Remove a finished job's row with its events and checkpoint rows; the caller commits,
    then removes its folder. A queued or running job is cancelled first; one whose model is
    still registered keeps it: delete the model first."""
    if job.status not in lifecycle.FINISHED:
        raise Conflict(f"job {job.id} is {job.status}: cancel it first")
    if job.model_id is not None and session.get(Model, job.model_id) is not None:
        raise Conflict(f"job {job.id} registered model {job.model_id}: delete that model first")
    session.execute(sql_delete(JobEvent).where(JobEvent.job_id == job.id))
    session.execute(sql_delete(Checkpoint).where(Checkpoint.job_id == job.id))
    session.delete(job)
    session.flush()


def unpublish_job(store: ObjectStore, job_id: str) -> None:
    """Remove the job's checkpoints from the object store; a store that does not answer leaves
    them to an operator (without the job's rows nothing reads them)."""
    try:
        store.delete_prefix(job_object_prefix(job_id))
    except ObjectStoreError:
        logger.exception("job %s: its checkpoints could not be removed from the store", job_id)


def retry(*, session: Session, settings: Settings, job: Job, principal: Principal) -> Job:
    """Queue a failed or cancelled job again (409 otherwise), sent once the caller commits."""
    if job.status not in lifecycle.RETRYABLE:
        raise Conflict(f"job {job.id} is {job.status}: only a failed or cancelled job is retried")
    owner = Principal(tenant=job.tenant, admin=principal.admin)
    check_active_jobs(session=session, settings=settings, principal=owner)
    check_room_to_store(session=session, settings=settings, principal=owner)
    # Conditional: another request may have retried it since it was read.
    if not lifecycle.retry(session, job, now=utcnow(), attempts=settings.job_max_attempts):
        session.refresh(job)
        raise Conflict(f"job {job.id} is {job.status}: only a failed or cancelled job is retried")
    session.refresh(job)
    send_after_commit(session, settings, job.id)
    return job
