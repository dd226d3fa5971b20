"""Where things live inside the data directory, and writes that never leave half a file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.core.errors import InsufficientStorage


def new_id() -> str:
    return uuid.uuid4().hex


def datasets_root(data_dir: Path) -> Path:
    return data_dir / "datasets"


def dataset_dir(data_dir: Path, dataset_id: str) -> Path:
    return datasets_root(data_dir) / dataset_id


def job_dir(data_dir: Path, job_id: str) -> Path:
    return data_dir / "jobs" / job_id


def checkpoints_dir(data_dir: Path, job_id: str) -> Path:
    return job_dir(data_dir, job_id) / "checkpoints"


def training_config_path(data_dir: Path, job_id: str) -> Path:
    return job_dir(data_dir, job_id) / "training_config.json"


def training_log_path(data_dir: Path, job_id: str) -> Path:
    """The training process's stdout and stderr, every attempt appended."""
    return job_dir(data_dir, job_id) / "train.log"


def model_dir(data_dir: Path, model_id: str) -> Path:
    return data_dir / "models" / model_id


def exports_dir(data_dir: Path, model_id: str) -> Path:
    """A model's exports (ONNX), built on request and kept: a cache, rebuilt if removed."""
    return data_dir / "exports" / model_id


def model_object_folder(model_id: str) -> str:
    """The model's published folder in the object store (`app.core.objects.folders`)."""
    return f"models/{model_id}"


def dataset_object_folder(dataset_id: str) -> str:
    """The dataset's published folder (its images and manifest) in the object store."""
    return f"datasets/{dataset_id}"


def job_object_prefix(job_id: str) -> str:
    """Everything of a job in the object store (its checkpoints) lies under this folder."""
    return f"jobs/{job_id}/"


def object_key_of(data_dir: Path, path: Path) -> str:
    """The object key of a folder in the data dir: its `/`-separated path from the data dir,
    so a checkpoint's row (`jobs/<id>/checkpoints/attempt-1/epoch-2`) names its objects too."""
    return path.relative_to(data_dir).as_posix()


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (0 when there is none): what it keeps on disk,
    near enough.

    Files may go while it counts (a training run prunes its checkpoints): those count 0.
    """
    total = 0
    for root, _dirs, files in os.walk(folder):  # os.walk skips folders it cannot list
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """A folder to fill in place of `target`: a path beside it that does not exist yet, renamed
    to `target` when the block ends and removed when it raises, so a reader never finds a half
    folder under `target`'s name. An older folder there is renamed aside first and removed
    after the rename (in between, `target` is briefly absent, never half)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{new_id()[:8]}")
    try:
        yield staging
        if target.exists():
            trash = target.with_name(f".{target.name}.old-{new_id()[:8]}")
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_dir_if_empty(folder: Path) -> None:
    """Remove `folder` if nothing is left in it; one that still holds something stays."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def discard_dir(folder: Path) -> None:
    """Remove a folder whose row is gone: renamed aside first, so that no half-removed folder
    is ever found under its own name."""
    if not folder.exists():
        return
    trash = folder.with_name(f".{folder.name}.deleted-{new_id()}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def require_free_disk(data_dir: Path, floor_bytes: int) -> None:
    """`InsufficientStorage` (507) when the data directory's disk has less than `floor_bytes`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_dir).free
    if free < floor_bytes:
        raise InsufficientStorage(
            f"not enough free disk space: {free / 1024**2:.0f} MiB free, uploads need at least "
            f"{floor_bytes / 1024**2:.0f} MiB to stay free; try again once space is freed"
        )
