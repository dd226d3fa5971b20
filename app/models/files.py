"""Where a registered model's files are on this machine: the data dir, else the object store."""

from __future__ import annotations

from pathlib import Path

from app.core.objects.cache import ObjectCache
from app.core.objects.store import ObjectNotFound
from app.core.storage import model_dir, model_object_folder


def model_folder(*, data_dir: Path, object_cache: ObjectCache, model_id: str) -> Path:
    """The model's folder in the data dir, where a worker sharing it wrote it; else its folder
    as published to the object store, fetched through this machine's cache (checked against its
    manifest). When neither has it, the data-dir path, which does not exist."""
    local = model_dir(data_dir, model_id)
    if local.is_dir():
        return local
    try:
        return object_cache.folder(model_object_folder(model_id))
    except ObjectNotFound:
        return local
