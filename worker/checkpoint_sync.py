"""A job's checkpoints in the object store, so that an attempt on another machine resumes.

Each checkpoint the training process writes (on local disk, in its attempt's folder) is
published as a folder of its own under the key of its local path
(`jobs/<id>/checkpoints/attempt-<n>/epoch-<e>`): every file first, its manifest last. Only then
is its database row written, fenced by the attempt's lease, so a row always names a whole
folder, and a resume, which starts from the rows, never picks one that is still uploading
(open_clip's remote sync warns its resume can). An attempt writes only under its own
`attempt-<n>/`, so a stale one (its lease gone) never touches what a newer one relies on, and
what it published after losing its lease it removes again.

A worker that starts an attempt fetches the newest published checkpoint of the job (and the best
one it names) into its own data dir when that disk does not have it; the run's resume logic
then finds it as if an earlier attempt on this machine had written it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.objects.folders import (
    delete_folder,
    download_folder,
    publish_folder,
    published_folders,
)
from app.core.objects.retry import with_store_retries
from app.core.objects.store import ObjectNotFound, ObjectStore, ObjectStoreError
from app.core.storage import job_object_prefix, object_key_of
from app.orm import Checkpoint
from worker.training.checkpoints.names import TRAINER_STATE_NAME

logger = logging.getLogger(__name__)


class CheckpointSync:
    """Publishes one attempt's checkpoints and removes those the run has pruned."""

    def __init__(self, store: ObjectStore, data_dir: Path, *, retry_seconds: float) -> None:
        self.store = store
        self.data_dir = data_dir
        self.retry_seconds = retry_seconds

    def publish(self, folder: Path) -> bool:
        """Upload the checkpoint `folder`; False (logged) if the store stayed unavailable: the
        checkpoint is then local only, and a resume elsewhere starts from an older one."""
        key = object_key_of(self.data_dir, folder)
        try:
            with_store_retries(
                lambda: publish_folder(self.store, folder, key),
                what=f"checkpoint {key}",
                window_seconds=self.retry_seconds,
            )
        except ObjectStoreError:
            logger.exception("checkpoint %s stays local only: it could not be published", key)
            return False
        return True

    def withdraw(self, folder: Path) -> None:
        """Remove a published checkpoint whose row could not be written (the lease was lost)."""
        self._delete(object_key_of(self.data_dir, folder))

    def drop_pruned(self, attempt_folder: Path) -> None:
        """Unpublish this attempt's checkpoints that the run has pruned from its disk."""
        for key in published_folders(self.store, object_key_of(self.data_dir, attempt_folder)):
            if not (self.data_dir / key).is_dir():
                self._delete(key)

    def _delete(self, key: str) -> None:
        try:
            delete_folder(self.store, key)
        except ObjectStoreError:
            # Its row is absent or stale: no resume picks it; the job's deletion removes it.
            logger.exception("checkpoint %s: its objects could not be removed", key)


def fetch_resume_point(
    session: Session,
    store: ObjectStore,
    data_dir: Path,
    job_id: str,
    *,
    retry_seconds: float,
) -> Path | None:
    """Bring the job's newest published checkpoint (and the best one it names) to this disk if
    it is not here; the folder, or None when the job has none in the store."""
    rows = session.scalars(
        select(Checkpoint)
        .where(Checkpoint.job_id == job_id)
        .order_by(Checkpoint.epoch.desc(), Checkpoint.created_at.desc())
    ).all()
    for row in rows:
        key = Path(row.path).as_posix()
        local = data_dir / key
        if (local / TRAINER_STATE_NAME).is_file():
            return local  # already here: this machine ran that attempt
        if not key.startswith(job_object_prefix(job_id)):
            continue  # a row of another layout: never a key outside the job's folder
        fetched = _fetch(store, key, local, retry_seconds)
        if fetched:
            _fetch_best(store, key, local, retry_seconds)
            logger.info("job %s: checkpoint %s fetched from %s", job_id, key, store.location)
            return local
    return None


def _fetch(store: ObjectStore, key: str, target: Path, retry_seconds: float) -> bool:
    """Download the published folder `key` to `target`; False when it is not published (pruned,
    or its upload never finished)."""
    try:
        with_store_retries(
            lambda: download_folder(store, key, target),
            what=f"checkpoint {key}",
            window_seconds=retry_seconds,
        )
    except ObjectNotFound:
        return False
    return True


def _fetch_best(store: ObjectStore, key: str, local: Path, retry_seconds: float) -> None:
    """The best epoch the checkpoint's trainer state names, beside it, if it is published (if
    not, the resume logic makes the checkpoint itself the best)."""
    try:
        best = json.loads((local / TRAINER_STATE_NAME).read_text()).get("best_checkpoint")
    except (OSError, ValueError):
        return  # the resume logic reports an unreadable checkpoint itself
    if not isinstance(best, str) or not best.startswith("epoch-") or "/" in best:
        return
    sibling = local.parent / best
    if best != local.name and not (sibling / TRAINER_STATE_NAME).is_file():
        _fetch(store, f"{key.rsplit('/', 1)[0]}/{best}", sibling, retry_seconds)
