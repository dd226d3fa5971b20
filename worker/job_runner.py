"""Run one job: claim it, train it, record the outcome. The database is the truth throughout."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path

from sqlalchemy import update

from app.core.config import Settings, get_settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import delete_folder, publish_folder
from app.core.objects.retry import with_store_retries
from app.core.objects.store import ObjectStore, ObjectStoreError
from app.core.public_text import public_message
from app.core.queue import send_train_task
from app.core.storage import (
    atomic_dir,
    checkpoints_dir,
    dataset_dir,
    folder_bytes,
    job_object_prefix,
    model_dir,
    model_object_folder,
    new_id,
    training_config_path,
    training_log_path,
)
from app.jobs import lifecycle
from app.jobs.lifecycle import JobStatus
from app.ml.model_metadata import read_metadata
from app.orm import Dataset, Job, Model
from app.orm.base import utcnow
from worker import shutdown
from worker.checkpoint_sync import CheckpointSync, fetch_resume_point
from worker.dataset_copies import local_dataset
from worker.local_copies import ended_status, release_local_checkpoints
from worker.reporter import JobReporter
from worker.supervisor import TrainingProcessFailed, run_training_process
from worker.training.config import TrainingConfig
from worker.training.inputs.prepared import PREPARED_FOLDER
from worker.training.progress import RunResult

logger = logging.getLogger(__name__)
# How a full disk reads, from Python (`[Errno 28]`) or from safetensors' Rust (`os error 28`).
DISK_FULL = re.compile(r"\[Errno 28\]|os error 28|No space left on device")

# Files a registered model does not need: they only serve resuming a run.
TRAINING_ONLY_FILES = ("optimizer*", "trainer_state.json")


def lease_owner() -> str:
    """Who runs this attempt, and a random token that makes the lease unique to the attempt.

    Two attempts in the same worker thread (a job requeued while its first attempt was paused)
    must not pass for each other: every write an attempt makes is conditional on this value.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}/{uuid.uuid4().hex}"


def run(job_id: str, settings: Settings | None = None) -> None:
    """Claim and run a job; a job that is not `queued` (a redelivery) is left alone."""
    settings = settings or get_settings()
    owner = lease_owner()
    job = claim(settings, job_id, owner)
    if job is None:
        logger.info("job %s is not queued any more; nothing to do", job_id)
        return
    store = open_store(settings)
    reporter = JobReporter(
        database_url=settings.resolved_database_url,
        data_dir=settings.data_dir,
        job_id=job_id,
        owner=owner,
        heartbeat_seconds=min(30.0, settings.heartbeat_timeout_seconds / 4),
        stall_seconds=settings.training_stall_seconds,
        checkpoint_sync=CheckpointSync(
            store, settings.data_dir, retry_seconds=settings.store_retry_seconds
        ),
    )
    try:
        with reporter:
            # Under the heartbeat: fetching a big dataset may take longer than its timeout.
            bring_inputs_here(settings, store, job)
            attempts = checkpoints_dir(settings.data_dir, job_id)
            result = run_training_process(
                training_config(settings, job),
                attempt_dir(attempts, job.attempt),
                reporter,
                earlier_dirs=earlier_attempt_dirs(attempts, job.attempt),
                config_path=training_config_path(settings.data_dir, job_id),
                log_path=training_log_path(settings.data_dir, job_id),
                on_started=reporter.on_process_started,
                stop_grace_seconds=settings.training_stop_grace_seconds,
            )
        if result.stopped:
            if not give_way(settings, job_id, owner):
                finish(settings, job_id, owner, status=JobStatus.CANCELLED, message="cancelled")
        else:
            register_model(settings, job, owner, result)
            drop_resume_state(checkpoints_dir(settings.data_dir, job_id))
            drop_published_checkpoints(store, job_id)
    except TrainingProcessFailed as error:
        # A stop of the whole process group (systemd, `kill -TERM -pgid`) kills the run too.
        # A lost rank queues the job again instead, while it has attempts left.
        given_back = give_way(settings, job_id, owner) or (
            error.rank_lost and requeue_lost_rank(settings, job_id, owner, str(error))
        )
        if not given_back:
            finish(settings, job_id, owner, status=JobStatus.FAILED, message=str(error))
    except Exception as error:
        logger.exception("job %s failed", job_id)
        finish(
            settings,
            job_id,
            owner,
            status=JobStatus.FAILED,
            message=f"{type(error).__name__}: {error}",
        )
    # After a success this host's checkpoint copies go before they are measured (the bucket's
    # went too); after a failure they are measured first, since the bucket still holds them.
    ended = ended_status(settings, job_id)
    if ended == JobStatus.SUCCEEDED:
        release_local_checkpoints(settings, store, job_id, ended)
    record_stored_bytes(settings, job)
    if ended in (JobStatus.FAILED, JobStatus.CANCELLED):
        release_local_checkpoints(settings, store, job_id, ended)


def record_stored_bytes(settings: Settings, job: Job) -> None:
    """Measure, once the attempt is over, what its checkpoints and its datasets' prepared arrays
    keep on disk: the tenant's stored-bytes quota counts them (app/auth/usage.py)."""
    checkpoint_bytes = folder_bytes(checkpoints_dir(settings.data_dir, job.id))
    dataset_ids = {job.dataset_id, *([job.control_dataset_id] if job.control_dataset_id else [])}
    try:
        with session_scope(settings.resolved_database_url) as session:
            session.execute(
                update(Job).where(Job.id == job.id).values(checkpoint_bytes=checkpoint_bytes)
            )
            for dataset_id in dataset_ids:
                prepared = dataset_dir(settings.data_dir, dataset_id) / PREPARED_FOLDER
                session.execute(
                    update(Dataset)
                    .where(Dataset.id == dataset_id)
                    .values(prepared_bytes=folder_bytes(prepared))
                )
    except Exception:
        # The job's outcome is recorded; its sizes are measured again at its next attempt.
        logger.exception("job %s: could not record its stored bytes", job.id)


def bring_inputs_here(settings: Settings, store: ObjectStore, job: Job) -> None:
    """The job's datasets and its newest checkpoint on this machine's disk, from the object
    store where this worker has not seen them (it runs on another machine than the api, or
    than the attempt before)."""
    for dataset_id in (
        job.dataset_id,
        *([job.control_dataset_id] if job.control_dataset_id else []),
    ):
        local_dataset(settings, store, dataset_id)
    with session_scope(settings.resolved_database_url) as session:
        fetch_resume_point(
            session, store, settings.data_dir, job.id, retry_seconds=settings.store_retry_seconds
        )


def drop_published_checkpoints(store: ObjectStore, job_id: str) -> None:
    """A finished job never resumes: its checkpoints leave the store (its model is there)."""
    try:
        store.delete_prefix(job_object_prefix(job_id))
    except ObjectStoreError:
        logger.exception("job %s: its checkpoints could not be removed from the store", job_id)


def requeue_lost_rank(settings: Settings, job_id: str, owner: str, reason: str) -> bool:
    """Queue the job again after a rank of its run was killed from outside, and wake a worker;
    False (nothing done) if it has no attempt left, is being cancelled, or is no longer ours."""
    with session_scope(settings.resolved_database_url) as session:
        requeued = lifecycle.requeue_lost_rank(
            session, job_id, owner=owner, now=utcnow(), reason=reason
        )
    if requeued:
        logger.warning("job %s queued again: %s", job_id, reason)
        wake_a_worker(settings, job_id)
    return requeued


def wake_a_worker(settings: Settings, job_id: str) -> None:
    try:
        send_train_task(
            broker_url=str(settings.redis_url), queue=settings.train_queue, job_id=job_id
        )
    except Exception:
        # The row is queued: the reconciler sends it again once the broker answers.
        logger.warning("job %s: could not send it again; the reconciler will", job_id)


def give_way(settings: Settings, job_id: str, owner: str) -> bool:
    """If the worker is shutting down, put the job back in the queue, its attempt not counted,
    and wake another worker; False (nothing done) otherwise, or if a cancel is pending."""
    if not shutdown.requested():
        return False
    with session_scope(settings.resolved_database_url) as session:
        released = lifecycle.release(session, job_id, owner=owner, now=utcnow())
    if not released:
        return False
    logger.info("job %s queued again: this worker is shutting down", job_id)
    wake_a_worker(settings, job_id)
    return True


def attempt_dir(checkpoints: Path, attempt: int) -> Path:
    """Each attempt writes and prunes its checkpoints in a folder of its own."""
    return checkpoints / f"attempt-{attempt}"


def earlier_attempt_dirs(checkpoints: Path, attempt: int) -> tuple[Path, ...]:
    """Where earlier attempts left checkpoints, newest first; the job folder itself held them
    before attempts had folders of their own."""
    return (*(attempt_dir(checkpoints, n) for n in range(attempt - 1, 0, -1)), checkpoints)


def claim(settings: Settings, job_id: str, owner: str) -> Job | None:
    """One conditional UPDATE: of two workers holding the same message, exactly one wins."""
    with session_scope(settings.resolved_database_url) as session:
        job = lifecycle.claim(session, job_id, owner=owner, now=utcnow())
        if job is None:
            return None
        # Which machine and process runs it goes to the log; events are public.
        logger.info("job %s attempt %d runs on %s", job_id, job.attempt, owner)
        session.expunge(job)
        return job


def training_config(settings: Settings, job: Job) -> TrainingConfig:
    """The job's stored hyperparameters, read through today's schema, plus the worker's choices."""
    control = job.control_dataset_id
    return TrainingConfig.for_job(
        job.hyperparameters,
        base_model=job.base_model,
        dataset_dir=dataset_dir(settings.data_dir, job.dataset_id),
        control_dataset_dir=dataset_dir(settings.data_dir, control) if control else None,
        device=settings.device,
        base_models_dir=settings.base_models_dir,
        distributed_timeout_seconds=settings.distributed_timeout_seconds,
    )


def register_model(settings: Settings, job: Job, owner: str, result: RunResult) -> None:
    """Copy the best checkpoint to models/<id>/, publish that folder to the object store
    (every file, then its manifest), and only then record it; the job then `succeeded`. An api
    on another machine serves it from the store."""
    if result.best_checkpoint is None:
        raise RuntimeError("training finished without writing a checkpoint")
    model_id = new_id()
    target = model_dir(settings.data_dir, model_id)
    with atomic_dir(target) as staging:
        shutil.copytree(
            result.best_checkpoint, staging, ignore=shutil.ignore_patterns(*TRAINING_ONLY_FILES)
        )
    metadata = read_metadata(target)
    store = open_store(settings)
    published = model_object_folder(model_id)
    try:
        with_store_retries(
            lambda: publish_folder(store, target, published),
            what=f"model {model_id}",
            window_seconds=settings.store_retry_seconds,
        )
        with session_scope(settings.resolved_database_url) as session:
            session.add(
                Model(
                    id=model_id,
                    tenant=job.tenant,
                    name=job.name,
                    job_id=job.id,
                    base_model=job.base_model,
                    kind=metadata.kind,
                    labels=metadata.labels,
                    prompt_template=metadata.prompt_template,
                    metrics=result.best_metrics,
                    path=str(Path("models") / model_id),
                    stored_bytes=folder_bytes(target),
                )
            )
            if not lifecycle.succeed(
                session,
                job.id,
                owner=owner,
                now=utcnow(),
                model_id=model_id,
                report=metadata.report,
                message=f"succeeded; model {model_id} from epoch {metadata.epoch}",
                data={"model_id": model_id, "metrics": result.best_metrics},
            ):
                raise LostLease(job.id)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        # What the store kept of it is invisible without its manifest, but still bytes.
        with contextlib.suppress(ObjectStoreError):
            delete_folder(store, published)
        raise


def drop_resume_state(folder: Path) -> None:
    """A finished job never resumes: its optimizer state (twice the weights) is dead weight."""
    for pattern in TRAINING_ONLY_FILES:
        for checkpoint in (*folder.glob("epoch-*"), *folder.glob("attempt-*/epoch-*")):
            for path in checkpoint.glob(pattern):
                path.unlink(missing_ok=True)


class LostLease(RuntimeError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was taken over by the reconciler while it ran")


def finish(settings: Settings, job_id: str, owner: str, *, status: JobStatus, message: str) -> None:
    """End the job as `failed` or `cancelled`, if this worker still holds it.

    A failure's message is made public first: no paths on the server, no SQL; the full text
    goes to the log with the job id.
    """
    with session_scope(settings.resolved_database_url) as session:
        if status == JobStatus.FAILED:
            logger.error("job %s failed: %s", job_id, message)
            error = public_message(message, settings.data_dir)
            if DISK_FULL.search(message):
                error += (
                    "; the server's disk is full: once space is freed, POST "
                    f"/jobs/{job_id}/retry resumes the job from its last checkpoint"
                )
            lifecycle.fail(session, job_id, owner=owner, now=utcnow(), error=error)
        else:
            lifecycle.end_cancelled(session, job_id, owner=owner, now=utcnow())
