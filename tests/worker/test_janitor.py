"""The janitor frees what nothing will use again, and only after its grace period."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import publish_folder
from app.core.storage import checkpoints_dir, dataset_dir
from app.jobs.reconcile import reconcile_once
from app.orm import Job
from app.orm.base import utcnow
from tests.api.jobs import create_job, set_status

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


def age(folder: Path, seconds: float) -> None:
    """Make every file and folder under `folder` look `seconds` old."""
    when = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when))


def partial_upload(settings: Settings, name: str) -> Path:
    folder = dataset_dir(settings.data_dir, name)
    folder.mkdir(parents=True)
    (folder / "upload.zip.part").write_bytes(b"PK\x03\x04 half an upload")
    return folder


def test_an_abandoned_upload_is_removed_after_its_grace_period(
    settings: Settings, ready_dataset: str
) -> None:
    grace = settings.orphan_upload_grace_seconds
    old, young = partial_upload(settings, "abandoned"), partial_upload(settings, "arriving")
    age(old, grace + 60)
    age(young, grace - 60)
    age(dataset_dir(settings.data_dir, ready_dataset), grace + 60)

    report = reconcile_once(settings)
    assert "abandoned" in report.janitor.orphan_uploads and not old.exists()
    assert young.exists()  # may still be arriving
    assert dataset_dir(settings.data_dir, ready_dataset).is_dir()  # it has a row


def test_checkpoints_of_failed_and_cancelled_jobs_are_freed_after_their_ttl(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    ttl = timedelta(seconds=settings.ended_job_checkpoints_ttl_seconds)
    long_ago, lately = utcnow() - ttl - timedelta(hours=1), utcnow() - ttl + timedelta(hours=1)
    cases = {
        "failed long ago": ("failed", long_ago),
        "cancelled long ago": ("cancelled", long_ago),
        "failed lately": ("failed", lately),
        "succeeded long ago": ("succeeded", long_ago),
    }
    folders, job_ids = {}, {}
    for name, (status, finished_at) in cases.items():
        job = create_job(client, ready_dataset)
        set_status(settings, job["id"], status=status, finished_at=finished_at, checkpoint_bytes=7)
        folder = checkpoints_dir(settings.data_dir, job["id"]) / "attempt-1" / "epoch-1"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        folders[name], job_ids[name] = folder, job["id"]
    # One failed job ran on another machine: its checkpoints are only in the object store.
    elsewhere = create_job(client, ready_dataset)
    set_status(settings, elsewhere["id"], status="failed", finished_at=long_ago, checkpoint_bytes=7)
    store = open_store(settings)
    source = folders["failed long ago"]
    for job_id in (elsewhere["id"], job_ids["failed long ago"], job_ids["failed lately"]):
        publish_folder(store, source, f"jobs/{job_id}/checkpoints/attempt-1/epoch-1")

    reconcile_once(settings)
    assert store.list(f"jobs/{elsewhere['id']}/") == []
    assert store.list(f"jobs/{job_ids['failed long ago']}/") == []
    assert store.list(f"jobs/{job_ids['failed lately']}/") != []
    assert not folders["failed long ago"].exists()
    assert not folders["cancelled long ago"].exists()
    assert folders["failed lately"].exists()
    assert folders["succeeded long ago"].exists()
    # Freed bytes no longer count against the tenant's stored bytes; kept ones still do.
    with session_scope(settings.resolved_database_url) as session:
        recorded = {
            name: session.scalar(select(Job.checkpoint_bytes).where(Job.id == job_id))
            for name, job_id in job_ids.items()
        }
    assert recorded == {
        "failed long ago": 0,
        "cancelled long ago": 0,
        "failed lately": 7,
        "succeeded long ago": 7,
    }
