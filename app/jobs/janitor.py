"""The janitor: files nothing will use again, removed after a grace period.

- Dataset folders without a dataset row: uploads whose request died half-way (the api crashed,
  the client vanished) leave their partial `upload.zip.part` behind.
- Checkpoints of jobs that ended `failed` or `cancelled`: kept a while for a look, then freed,
  from this disk and from the object store (where a worker on another machine published them).

It runs with the reconciler; each pass is idempotent, so several api replicas may run it.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.store import ObjectStoreError
from app.core.storage import checkpoints_dir, datasets_root, job_object_prefix
from app.jobs.lifecycle import JobStatus
from app.orm import Dataset, Job

logger = logging.getLogger(__name__)

ENDED_WITHOUT_MODEL = (JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class JanitorReport:
    orphan_uploads: list[str] = field(default_factory=list)
    job_checkpoints: list[str] = field(default_factory=list)


def sweep(*, session: Session, settings: Settings, now: datetime) -> JanitorReport:
    report = JanitorReport()
    remove_orphan_uploads(session, settings, now, report)
    remove_ended_job_checkpoints(session, settings, now, report)
    return report


def remove_orphan_uploads(
    session: Session, settings: Settings, now: datetime, report: JanitorReport
) -> None:
    root = datasets_root(settings.data_dir)
    if not root.is_dir():
        return
    cutoff = (now - timedelta(seconds=settings.orphan_upload_grace_seconds)).timestamp()
    known = set(session.scalars(select(Dataset.id)).all())
    for folder in root.iterdir():
        # A folder younger than the grace period may be an upload still arriving.
        if folder.is_dir() and folder.name not in known and _newest_change(folder) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            report.orphan_uploads.append(folder.name)


def remove_ended_job_checkpoints(
    session: Session, settings: Settings, now: datetime, report: JanitorReport
) -> None:
    cutoff = now - timedelta(seconds=settings.ended_job_checkpoints_ttl_seconds)
    ended = session.execute(
        select(Job.id, Job.checkpoint_bytes).where(
            Job.status.in_(ENDED_WITHOUT_MODEL), Job.finished_at < cutoff
        )
    ).all()
    store = None
    for job_id, checkpoint_bytes in ended:
        folder = checkpoints_dir(settings.data_dir, job_id)
        # A job with bytes recorded has checkpoints somewhere: here, or only in the store.
        if not folder.exists() and not checkpoint_bytes:
            continue
        store = store or open_store(settings)
        try:
            store.delete_prefix(job_object_prefix(job_id))
        except ObjectStoreError as error:
            logger.warning("job %s: its checkpoints stay in the store for now: %s", job_id, error)
            continue  # the next pass tries again
        shutil.rmtree(folder, ignore_errors=True)
        report.job_checkpoints.append(job_id)
        # Freed: the tenant's stored bytes no longer count them.
        session.execute(update(Job).where(Job.id == job_id).values(checkpoint_bytes=0))


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [path.stat().st_mtime for path in folder.rglob("*") if path.exists()]
    return max(times)
