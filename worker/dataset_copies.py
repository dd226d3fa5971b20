"""The datasets a worker trains on, on its own disk: fetched from the object store when its data
dir lacks them (a worker on another machine than the api that took the upload).

A dataset's files never change once it is ready, so a local copy with its manifest is good for
as long as the dataset lives. Two jobs of one worker machine that need the same dataset fetch it
once: the second waits on a file lock and then finds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from app.core.config import Settings
from app.core.objects.folders import download_folder
from app.core.objects.retry import with_store_retries
from app.core.objects.store import ObjectNotFound, ObjectStore
from app.core.storage import dataset_dir, dataset_object_folder, datasets_root
from app.ml.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)


class DatasetMissing(RuntimeError):
    def __init__(self, dataset_id: str, location: str) -> None:
        super().__init__(
            f"dataset {dataset_id} is neither in this worker's data dir nor in the object store "
            f"({location})"
        )


def local_dataset(settings: Settings, store: ObjectStore, dataset_id: str) -> Path:
    """The dataset's folder in this worker's data dir, fetched from the store first if needed."""
    folder = dataset_dir(settings.data_dir, dataset_id)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    with _locked(datasets_root(settings.data_dir) / f".{dataset_id}.lock"):
        if (folder / MANIFEST_NAME).is_file():  # another job of this machine fetched it
            return folder
        try:
            # Whole or not at all (download_folder fills a staging folder, then renames).
            manifest = with_store_retries(
                lambda: download_folder(store, dataset_object_folder(dataset_id), folder),
                what=f"dataset {dataset_id}",
                window_seconds=settings.store_retry_seconds,
            )
        except ObjectNotFound:
            raise DatasetMissing(dataset_id, store.location) from None
    logger.info(
        "dataset %s fetched from %s: %d files, %d bytes",
        dataset_id,
        store.location,
        len(manifest.files),
        manifest.total_bytes,
    )
    return folder


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
