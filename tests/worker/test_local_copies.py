"""A worker host whose artefacts live in a bucket frees its checkpoint copies once a job ends,
and keeps any checkpoint the bucket does not hold whole."""

from __future__ import annotations

import uuid
from pathlib import Path

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.folders import publish_folder
from app.core.storage import checkpoints_dir, object_key_of
from app.jobs.lifecycle import JobStatus
from tests.object_store import SeaweedS3
from worker.local_copies import release_local_checkpoints


def checkpoint(data_dir: Path, job_id: str, name: str) -> Path:
    folder = checkpoints_dir(data_dir, job_id) / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(uuid.uuid4().bytes * 64)
    return folder


def worker_host(seaweedfs: SeaweedS3, s3_bucket: str, data_dir: Path) -> Settings:
    bucket = seaweedfs.settings(f"s3://{s3_bucket}/copies-{uuid.uuid4().hex[:8]}")
    return bucket.model_copy(update={"data_dir": data_dir})


def test_after_a_failure_only_the_checkpoints_the_bucket_holds_whole_are_removed(
    seaweedfs: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    settings = worker_host(seaweedfs, s3_bucket, tmp_path)
    store = open_store(settings)
    job_id = uuid.uuid4().hex
    published = checkpoint(tmp_path, job_id, "attempt-1/epoch-1")
    publish_folder(store, published, object_key_of(tmp_path, published))
    only_here = checkpoint(tmp_path, job_id, "attempt-1/epoch-2")  # its upload failed
    removed = release_local_checkpoints(settings, store, job_id, JobStatus.FAILED)
    assert removed == [object_key_of(tmp_path, published)]
    assert not published.exists() and (only_here / "model.safetensors").is_file()
    # The bucket's copy is untouched: the api's janitor removes it after its grace period.
    assert store.list(f"jobs/{job_id}/")


def test_after_a_success_every_copy_goes_and_the_job_s_folder_with_them(
    seaweedfs: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> None:
    settings = worker_host(seaweedfs, s3_bucket, tmp_path)
    job_id = uuid.uuid4().hex
    for name in ("attempt-1/epoch-1", "attempt-2/epoch-3"):
        checkpoint(tmp_path, job_id, name)
    removed = release_local_checkpoints(settings, open_store(settings), job_id, JobStatus.SUCCEEDED)
    assert len(removed) == 2 and not checkpoints_dir(tmp_path, job_id).exists()


def test_with_the_local_store_the_data_dir_is_the_store_and_nothing_is_removed(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    job_id = uuid.uuid4().hex
    kept = checkpoint(tmp_path, job_id, "attempt-1/epoch-1")
    assert (
        release_local_checkpoints(settings, open_store(settings), job_id, JobStatus.SUCCEEDED) == []
    )
    assert (kept / "model.safetensors").is_file()
