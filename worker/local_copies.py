"""A worker whose artefacts live in a bucket keeps only copies on its own disk: once a job has
ended, its checkpoint folders there go, so that a worker host does not fill up with the
checkpoints of every job it ever ran.

After a success nothing of them is needed: the model is in the bucket and the job never resumes.
After a failure or a cancel, a folder goes only if the bucket holds it whole (its manifest is
there): one that could not be published is the only copy, and stays for the api's janitor
rules. A worker that starts sweeps its data dir the same way, for the jobs of a worker that
died on this host before it could (`sweep_local_copies`). With the local store (the default,
one machine) the data dir is the store: nothing here is a copy, and nothing is removed.
"""

from __future__ import annotations

import logging
import shutil

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store, stores_remotely
from app.core.objects.folders import read_manifest
from app.core.objects.store import ObjectStore, ObjectStoreError
from app.core.storage import checkpoints_dir, object_key_of, remove_dir_if_empty
from app.jobs.status import FINISHED, JobStatus
from app.orm import Job

logger = logging.getLogger(__name__)


def ended_status(settings: Settings, job_id: str) -> JobStatus | None:
    """The job's status if it has ended; None while it is queued or running (elsewhere, too),
    and when the database does not answer (the copies then stay: they are only bytes)."""
    try:
        status = _job_status(settings, job_id)
    except SQLAlchemyError:
        logger.warning("job %s: its status could not be read; its local copies stay", job_id)
        return None
    return JobStatus(status) if status in FINISHED else None


def _job_status(settings: Settings, job_id: str) -> str | None:
    """The job's status; None when there is no such job (it was deleted)."""
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def release_local_checkpoints(
    settings: Settings, store: ObjectStore, job_id: str, status: JobStatus
) -> list[str]:
    """Remove this host's copies of an ended job's checkpoints; the keys of those removed."""
    folder = checkpoints_dir(settings.data_dir, job_id)
    if not stores_remotely(settings) or not folder.is_dir():
        return []
    copies = sorted([*folder.glob("attempt-*/epoch-*"), *folder.glob("epoch-*")])
    removed = []
    for copy in copies:
        key = object_key_of(settings.data_dir, copy)
        if status != JobStatus.SUCCEEDED and not _published(store, key):
            continue
        shutil.rmtree(copy, ignore_errors=True)
        removed.append(key)
    for attempt in folder.glob("attempt-*"):
        remove_dir_if_empty(attempt)
    remove_dir_if_empty(folder)
    return removed


def _published(store: ObjectStore, key: str) -> bool:
    try:
        return read_manifest(store, key) is not None
    except ObjectStoreError as error:
        logger.warning("checkpoint %s stays on this disk: the store did not answer: %s", key, error)
        return False


def sweep_local_copies(settings: Settings) -> list[str]:
    """Release the checkpoint copies of every ended job in this host's data dir, and remove the
    job folders of jobs that no longer exist (deleted: the api removed their objects). The ids
    of the jobs swept."""
    jobs_root = settings.data_dir / "jobs"
    if not stores_remotely(settings) or not jobs_root.is_dir():
        return []
    store = open_store(settings)
    swept = []
    for folder in sorted(path for path in jobs_root.iterdir() if path.is_dir()):
        try:
            status = _job_status(settings, folder.name)
        except SQLAlchemyError as error:
            logger.warning("local copies: the database did not answer; swept later: %s", error)
            break
        if status is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif status in FINISHED:
            release_local_checkpoints(settings, store, folder.name, JobStatus(status))
        else:
            continue
        swept.append(folder.name)
    return swept
