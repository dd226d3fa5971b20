"""The job runner in-process against the real database: claim, progress, outcome."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from transformers import CLIPModel

from app.core.config import Settings
from app.core.db import get_engine, session_scope
from app.core.storage import checkpoints_dir, dataset_dir, folder_bytes, model_dir
from app.ml.model_metadata import read_metadata
from app.ml.synthetic import make_images, png_bytes
from app.orm import Checkpoint, Dataset, Job, Model
from tests.conftest import make_ready_dataset
from tests.small_filesystem import can_mount_a_small_filesystem
from tests.worker.jobs import new_job
from worker import job_runner
from worker.job_runner import claim
from worker.training.config import TrainingConfig
from worker.training.fault_injection import CRASH_FILE_VARIABLE
from worker.training.inputs.prepared import PREPARED_FOLDER
from worker.training.run import run


@pytest.fixture
def progress_writes(settings: Settings) -> Iterator[list[str]]:
    """Every UPDATE that sets a job's progress, as the database receives it."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("UPDATE job SET progress"):
            statements.append(statement)

    engine = get_engine(settings.resolved_database_url)
    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)


def test_a_job_runs_to_success_and_registers_its_best_model(
    client: TestClient, settings: Settings, ready_dataset: str, progress_writes: list[str]
) -> None:
    job_id = new_job(client, ready_dataset)
    with session_scope(settings.resolved_database_url) as session:
        # The registered model must land in the job's tenant, whichever it is.
        session.execute(update(Job).where(Job.id == job_id).values(tenant="tenant-of-the-job"))
    job_runner.run(job_id, settings)

    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 1 and job["finished_at"] and job["started_at"]
    assert job["progress"]["fraction"] == 1.0
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 5 * 6
    assert job["progress"]["samples_per_second"] > 0
    assert job["metrics"]["val_accuracy"] >= 0.8
    assert job["metrics"]["base_model_metrics"]["val_accuracy"] < 0.6
    assert "train_loss" in job["metrics"]
    # The loss curve: one point per progress write, ending at the last step with its loss.
    curve = job["loss_curve"]
    assert len(curve) == len(progress_writes)
    assert [step for step, _ in curve] == sorted({step for step, _ in curve})
    assert curve[-1] == [30, pytest.approx(job["metrics"]["train_loss"], abs=1e-6)]
    # 30 steps take well under a second each here: progress is written per second, not per step.
    assert 1 <= len(progress_writes) < 30

    events = client.get(f"/jobs/{job_id}/events").json()
    kinds = [(event["type"], event["data"].get("epoch")) for event in events]
    assert kinds[0] == ("status", None) and events[0]["message"] == "queued"
    assert ("evaluation", 0) in kinds and ("evaluation", 5) in kinds
    assert [kind for kind in kinds if kind[0] == "checkpoint"] == [
        ("checkpoint", epoch) for epoch in range(1, 6)
    ]
    assert events[-1]["data"]["status"] == "succeeded"

    with session_scope(settings.resolved_database_url) as session:
        model_record = session.get(Model, job["model_id"])
        assert model_record is not None
        assert model_record.tenant == "tenant-of-the-job"
        assert model_record.labels == [
            "blue triangle",
            "green square",
            "red circle",
            "yellow circle",
        ]
        checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        assert sorted(checkpoint.epoch for checkpoint in checkpoints) == [1, 2, 3, 4, 5]
    folder = model_dir(settings.data_dir, job["model_id"])
    assert (folder / "model.safetensors").is_file()
    assert not list(folder.glob("optimizer*"))
    assert CLIPModel.from_pretrained(folder).config.vision_config.image_size == 32
    # The job's own checkpoints stay, without the optimizer state only a resume would need.
    job_checkpoints = checkpoints_dir(settings.data_dir, job_id)
    assert {path.name for path in job_checkpoints.iterdir()} == {"attempt-1"}
    assert {path.name for path in (job_checkpoints / "attempt-1").iterdir()} >= {"epoch-5"}
    assert list(job_checkpoints.glob("attempt-1/*/model.safetensors"))
    assert not list(job_checkpoints.glob("attempt-1/*/optimizer*"))
    assert read_metadata(folder).metrics["val_accuracy"] == model_record.metrics["val_accuracy"]
    # What the rows record for the tenant's stored-bytes quota is what the folders hold now
    # (the optimizer state dropped).
    with session_scope(settings.resolved_database_url) as session:
        job_record = session.get(Job, job_id)
        dataset_record = session.get(Dataset, ready_dataset)
        assert job_record is not None and dataset_record is not None
        recorded = (
            model_record.stored_bytes,
            job_record.checkpoint_bytes,
            dataset_record.prepared_bytes,
        )
    on_disk = (
        folder_bytes(folder),
        folder_bytes(job_checkpoints),
        folder_bytes(dataset_dir(settings.data_dir, ready_dataset) / PREPARED_FOLDER),
    )
    assert recorded == on_disk
    assert min(on_disk) > 10_000


@pytest.mark.faults
def test_a_redelivered_message_never_runs_a_job_twice(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = new_job(client, ready_dataset)
    first = claim(settings, job_id, "worker-a")
    second = claim(settings, job_id, "worker-b")
    assert first is not None and second is None
    job_runner.run(job_id, settings)  # the redelivery: nothing happens
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "running" and job["attempt"] == 1


@pytest.mark.backend_independent  # the error's text
def test_a_job_that_raises_ends_failed_with_a_readable_error(
    client: TestClient, settings: Settings
) -> None:
    from tests.conftest import make_ready_dataset

    dataset_id = make_ready_dataset(settings, per_class=4)
    (dataset_dir(settings.data_dir, dataset_id) / "manifest.json").unlink()
    job_id = new_job(client, dataset_id)
    job_runner.run(job_id, settings)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed"
    # Neither this worker's disk nor the object store holds the dataset whole.
    assert job["error"].startswith(f"DatasetMissing: dataset {dataset_id} is neither")
    assert str(settings.data_dir) not in job["error"]
    events = client.get(f"/jobs/{job_id}/events").json()
    assert not any(str(settings.data_dir) in event["message"] for event in events)
    assert not any("worker" in event["data"] for event in events)
    assert job["model_id"] is None and job["finished_at"] is not None


def test_cancelling_a_running_job_stops_it_at_the_next_step(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = new_job(client, ready_dataset, epochs=500)
    runner = threading.Thread(target=job_runner.run, args=(job_id, settings))
    runner.start()
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job_id}").json()["progress"]["step"] < 2:
        assert time.monotonic() < deadline, "the job never made progress"
        time.sleep(0.05)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    runner.join(timeout=30)
    assert not runner.is_alive()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["progress"]["epoch"] < 500
    assert job["model_id"] is None
    with session_scope(settings.resolved_database_url) as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == "cancelled"


@pytest.mark.backend_independent  # the probe's maths
def test_a_linear_probe_reports_its_gain_and_keeps_the_control_set_exactly(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    control = make_ready_dataset(
        settings, per_class=8, classes=("purple square", "cyan circle", "red triangle"), seed=4
    )
    response = client.post(
        "/jobs",
        json={
            "dataset_id": ready_dataset,
            "base_model": "tiny-clip",
            "control_dataset_id": control,
            "hyperparameters": {
                "method": "linear_probe",
                "epochs": 3,
                "batch_size": 16,
                "head_learning_rate": 0.05,
            },
        },
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    job_runner.run(job_id, settings)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]

    report = client.get(f"/jobs/{job_id}/report").json()
    assert report["method"] == "linear_probe" and report["primary_metric"] == "val_accuracy"
    assert report["fine_tuned"]["metrics"]["val_accuracy"] == job["metrics"]["val_accuracy"]
    assert report["gain"] == pytest.approx(
        report["fine_tuned"]["metrics"]["val_accuracy"] - report["base"]["metrics"]["val_accuracy"]
    )
    # The probe never touches the towers: the control set's zero-shot answers are the same.
    retention = report["retention"]
    assert retention["zero_shot_accuracy_before"] == retention["zero_shot_accuracy_after"]
    assert retention["change"] == 0
    # The registered model carries the same report in its metadata.
    assert read_metadata(model_dir(settings.data_dir, job["model_id"])).report == report


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("full", {"freeze": "text"}),
        ("flyp", {}),
        ("lp_ft", {"head_learning_rate": 0.05}),
        ("lora", {"lora_rank": 4, "learning_rate": 5e-3}),
    ],
)
@pytest.mark.backend_independent  # what differs is the method, not the database
def test_every_method_runs_through_the_worker_and_serves_held_out_images(
    client: TestClient, settings: Settings, ready_dataset: str, method: str, extra: dict[str, Any]
) -> None:
    job_id = new_job(client, ready_dataset, method=method, epochs=3, **extra)
    job_runner.run(job_id, settings)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["hyperparameters"]["method"] == method
    report = client.get(f"/jobs/{job_id}/report").json()
    assert report["method"] == method and report["gain"] > 0

    held_out = make_images(per_class=5, seed=98)
    images = [base64.b64encode(png_bytes(sample.image)).decode() for sample in held_out]
    response = client.post("/predict", json={"model_id": job["model_id"], "images": images})
    assert response.status_code == 200, response.text
    hits = [
        ranked[0]["label"] == sample.label
        for ranked, sample in zip(response.json()["predictions"], held_out, strict=True)
    ]
    # Above chance (0.25) on images the job never saw, whichever method trained it.
    assert sum(hits) / len(hits) >= 0.5
    # Calibrated on val, whichever method: the registered folder serves the report's temperature.
    calibration = report["calibration"]
    registered = read_metadata(model_dir(settings.data_dir, job["model_id"]))
    assert registered.temperature == calibration["temperature"] > 0
    assert sum(item["count"] for item in calibration["bins_after"]) == calibration["num_images"]


@pytest.mark.backend_independent  # an old checkpoint's hyperparameters, not the database
def test_a_job_stored_before_methods_existed_resumes_from_its_checkpoint_as_full(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    first_version = {
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 2e-3,
        "weight_decay": 0.05,
        "warmup_ratio": 0.1,
        "seed": 0,
        "prompt_template": "a photo of a {}.",
        "augment": True,
    }
    job_id = new_job(client, ready_dataset)
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(hyperparameters=first_version))
    # Its first attempt, under the earlier version, got through epoch 1 before the worker died.
    first_attempt = TrainingConfig.for_job(
        {**first_version, "epochs": 1},
        base_model="tiny-clip",
        dataset_dir=dataset_dir(settings.data_dir, ready_dataset),
        device="cpu",
    )
    run(first_attempt, checkpoints_dir(settings.data_dir, job_id))

    job_runner.run(job_id, settings)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    evaluated = [
        e["data"]["epoch"]
        for e in client.get(f"/jobs/{job_id}/events").json()
        if e["type"] == "evaluation"
    ]
    assert evaluated == [2]  # resumed: neither the base model nor epoch 1 again
    report = client.get(f"/jobs/{job_id}/report").json()
    assert report["method"] == "full" and report["epochs_trained"] == 2


@pytest.mark.faults
@pytest.mark.backend_independent  # a fault of the data disk, not of the database
# The same story as the real small filesystem's below, told with an injected ENOSPC where a
# filesystem cannot be mounted (not root): one of the two runs, never both.
@pytest.mark.skipif(
    can_mount_a_small_filesystem(), reason="the real full filesystem's test below runs instead"
)
def test_a_full_disk_fails_the_job_clearly_and_a_retry_resumes_it_from_its_checkpoint(
    client: TestClient,
    settings: Settings,
    ready_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = tmp_path / "crash-order"
    order.write_text("ENOSPC@3")  # the disk fills up once epochs 1 and 2 are checkpointed
    monkeypatch.setenv(CRASH_FILE_VARIABLE, str(order))
    job_id = new_job(client, ready_dataset, epochs=3)  # the retry has one epoch left to train
    job_runner.run(job_id, settings)
    failed = client.get(f"/jobs/{job_id}").json()
    assert failed["status"] == "failed"
    assert "No space left on device" in failed["error"]
    assert f"POST /jobs/{job_id}/retry" in failed["error"]
    assert not order.exists()

    retried = client.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued" and retried.json()["error"] is None
    job_runner.run(job_id, settings)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    events = client.get(f"/jobs/{job_id}/events").json()
    assert [event["type"] for event in events].count("retry") == 1
    resumed = [event for event in events if event["type"] == "resume"]
    assert resumed and resumed[0]["data"]["checkpoint"] in {"epoch-1", "epoch-2"}
    # Only a failed or cancelled job is retried.
    assert client.post(f"/jobs/{job_id}/retry").status_code == 409


@pytest.mark.faults
@pytest.mark.backend_independent  # a fault of the data disk, not of the database
@pytest.mark.skipif(
    not can_mount_a_small_filesystem(), reason="needs to mount a small tmpfs (root)"
)
def test_a_checkpoint_filesystem_that_fills_up_fails_the_job_and_a_retry_resumes_it(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = new_job(client, ready_dataset, epochs=3)
    folder = checkpoints_dir(settings.data_dir, job_id)
    folder.mkdir(parents=True)
    # Room for one tiny-clip checkpoint (2.5 MB with its optimizer state), not two.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], check=True)
    try:
        job_runner.run(job_id, settings)
        failed = client.get(f"/jobs/{job_id}").json()
        assert failed["status"] == "failed"
        assert "No space left on device" in failed["error"]
        assert f"POST /jobs/{job_id}/retry" in failed["error"]
        assert list(folder.glob("attempt-1/epoch-1/model.safetensors"))
        assert not list(folder.glob("attempt-1/.epoch-*"))  # no half-written checkpoint left

        # Space is back: the same filesystem, larger.
        subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)
        assert client.post(f"/jobs/{job_id}/retry").status_code == 200
        job_runner.run(job_id, settings)
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        events = client.get(f"/jobs/{job_id}/events").json()
        assert [event["type"] for event in events].count("retry") == 1
        assert {"type": "resume", "checkpoint": "epoch-1"} in [
            {"type": event["type"], "checkpoint": event["data"].get("checkpoint")}
            for event in events
        ]
        # Only a failed or cancelled job is retried.
        assert client.post(f"/jobs/{job_id}/retry").status_code == 409
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
