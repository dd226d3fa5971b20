"""Registering a model copies its checkpoint whole and publishes it to the object store, or
leaves nothing in the models folder nor in the store."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.objects.factory import open_store
from app.core.objects.folders import read_manifest
from app.core.storage import model_dir, model_object_folder
from app.main import create_app
from app.orm import Job
from tests.api.predict_requests import encoded, shape_png
from tests.model_factory import SHAPE_LABELS, write_model_folder
from tests.object_store import SeaweedS3
from tests.worker.jobs import new_job
from worker.job_runner import LostLease, claim, register_model
from worker.training.progress import RunResult


def test_a_copy_that_fails_half_way_leaves_no_staging_folder(tmp_path: Path) -> None:
    checkpoint = tmp_path / "epoch-1"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    # A file that vanished under the copy: copytree copies the rest, then raises.
    (checkpoint / "tokenizer.json").symlink_to(tmp_path / "gone")
    settings = Settings(data_dir=tmp_path / "data")
    job = Job(id="job-1", tenant="t", name="n", base_model="tiny-clip")
    with pytest.raises(shutil.Error):
        register_model(settings, job, "owner", RunResult(stopped=False, best_checkpoint=checkpoint))
    assert list((tmp_path / "data" / "models").iterdir()) == []


def a_best_checkpoint(folder: Path) -> RunResult:
    write_model_folder(folder)
    (folder / "optimizer.pt").write_bytes(b"resume state only")  # not part of the model
    return RunResult(stopped=False, best_checkpoint=folder, best_metrics={"val_accuracy": 0.9})


def claimed_job(client: TestClient, settings: Settings, dataset_id: str) -> tuple[Job, str]:
    owner = f"test-{uuid.uuid4().hex[:8]}"
    job = claim(settings, new_job(client, dataset_id), owner)
    assert job is not None
    return job, owner


def test_a_registered_model_is_published_and_served_by_an_api_that_never_saw_it(
    client: TestClient,
    settings: Settings,
    ready_dataset: str,
    seaweedfs: SeaweedS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    url = f"s3://{s3_bucket}/register-{uuid.uuid4().hex[:8]}"
    worker_settings = seaweedfs.settings(
        url,
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        train_queue=settings.train_queue,
    )
    job, owner = claimed_job(client, settings, ready_dataset)
    register_model(worker_settings, job, owner, a_best_checkpoint(tmp_path / "epoch-3"))
    model_id = client.get(f"/jobs/{job.id}").json()["model_id"]
    assert model_id

    manifest = read_manifest(open_store(worker_settings), model_object_folder(model_id))
    assert manifest is not None
    local = model_dir(settings.data_dir, model_id)
    assert {entry.name for entry in manifest.files} == {
        path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()
    }
    assert "optimizer.pt" not in {entry.name for entry in manifest.files}

    # Another machine: the same database and bucket, a data dir of its own with nothing in it.
    other_host = worker_settings.model_copy(update={"data_dir": tmp_path / "other-host"})
    with TestClient(create_app(other_host, run_reconciler=False)) as other_api:
        response = other_api.post(
            "/predict", json={"model_id": model_id, "images": [encoded(shape_png("red circle"))]}
        )
        assert response.status_code == 200, response.text
        assert {p["label"] for p in response.json()["predictions"][0]} <= set(SHAPE_LABELS)
        download = other_api.get(f"/models/{model_id}/download")
        assert download.status_code == 200
        assert not (tmp_path / "other-host" / "models").exists()
        assert list((tmp_path / "other-host" / "cache" / "entries").iterdir())
        # Deleting it there removes its published folder from the bucket.
        assert other_api.delete(f"/models/{model_id}").status_code == 204
    assert open_store(worker_settings).list(f"{model_object_folder(model_id)}/") == []
    shutil.rmtree(local)  # the worker's machine's copy, which the other host cannot reach


def test_the_default_store_keeps_no_second_copy_of_a_model(
    client: TestClient, settings: Settings, ready_dataset: str, tmp_path: Path
) -> None:
    job, owner = claimed_job(client, settings, ready_dataset)
    register_model(settings, job, owner, a_best_checkpoint(tmp_path / "epoch-1"))
    model_id = client.get(f"/jobs/{job.id}").json()["model_id"]
    store = open_store(settings)
    manifest = read_manifest(store, model_object_folder(model_id))
    assert manifest is not None
    weights = next(entry for entry in manifest.files if entry.name == "model.safetensors")
    published = settings.data_dir / "objects" / manifest.key(weights)
    # One file on disk under two names: the store's link to the model folder's weights.
    assert (
        published.stat().st_ino
        == (model_dir(settings.data_dir, model_id) / weights.name).stat().st_ino
    )

    assert client.delete(f"/models/{model_id}").status_code == 204
    assert store.list(f"{model_object_folder(model_id)}/") == []


def test_a_lost_lease_leaves_nothing_published(
    client: TestClient, settings: Settings, ready_dataset: str, tmp_path: Path
) -> None:
    store = open_store(settings)
    published_before = store.list("models/")
    models_before = set((settings.data_dir / "models").glob("*"))
    job, _owner = claimed_job(client, settings, ready_dataset)
    with pytest.raises(LostLease):
        register_model(settings, job, "a-stale-attempt", a_best_checkpoint(tmp_path / "epoch-1"))
    assert store.list("models/") == published_before
    assert set((settings.data_dir / "models").glob("*")) == models_before
