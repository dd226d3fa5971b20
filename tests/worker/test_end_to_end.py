"""End to end with a real Celery worker process and real Redis: upload, train, predict."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from transformers import CLIPModel

from app.core.config import Settings
from app.core.db import session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import read_manifest
from app.core.storage import checkpoints_dir
from app.jobs.reconcile import reconcile_once
from app.main import create_app
from app.ml.synthetic import (
    DEFAULT_CLASSES,
    captions_zip,
    classification_zip,
    make_images,
    png_bytes,
)
from app.orm import Job
from tests.conftest import make_ready_dataset
from tests.object_store import SeaweedS3
from tests.worker.celery_process import WorkerProcess, is_running, wait_until_gone
from tests.worker.jobs import (
    FINISHED,
    HYPERPARAMETERS,
    events_of,
    own_database,
    queue_settings,
    start_job,
    wait_for_event,
    wait_for_file,
    wait_until,
)
from worker.local_copies import sweep_local_copies
from worker.training.fault_injection import CRASH_FILE_VARIABLE, paused_marker

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_settings(settings: Settings) -> Settings:
    return queue_settings(settings)


@pytest.fixture(scope="module")
def crash_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written by a test, it makes the worker's next training process crash (once)."""
    return tmp_path_factory.mktemp("crash") / "crash-next-run"


@pytest.fixture(scope="module")
def worker(
    e2e_settings: Settings, tmp_path_factory: pytest.TempPathFactory, crash_file: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        e2e_settings,
        tmp_path_factory.mktemp("logs") / "worker.log",
        extra_env={CRASH_FILE_VARIABLE: str(crash_file)},
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def e2e_client(e2e_settings: Settings, worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(e2e_settings, run_reconciler=False)) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded_dataset(e2e_client: TestClient) -> str:
    archive = classification_zip(make_images(per_class=30, seed=0))
    response = e2e_client.post(
        "/datasets", files={"file": ("shapes.zip", archive, "application/zip")}
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "ready"
    return str(response.json()["id"])


def training_pid(client: TestClient, job_id: str) -> int:
    """The process the job's latest attempt trains in, as its events record it."""
    return int(events_of(client, job_id, "process")[-1]["data"]["pid"])


def attempt_worker(client: TestClient, job_id: str) -> str:
    """`host:pid:thread` of the worker process that claimed the job's latest attempt."""
    # Internal, so not in the API: the lease `host:pid:thread/token` in the job's row.
    settings = client.app.state.settings  # type: ignore[attr-defined]
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.lease_owner is not None
        return job.lease_owner.split("/")[0]


def test_upload_train_and_predict_held_out_images(
    e2e_client: TestClient, uploaded_dataset: str, worker: WorkerProcess
) -> None:
    job_id = start_job(e2e_client, uploaded_dataset)
    job = wait_until(e2e_client, job_id, FINISHED)
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["fraction"] == 1.0
    # It trained in a process of its own, which is gone now that the job is done.
    pool_pid = int(attempt_worker(e2e_client, job_id).split(":")[1])
    assert worker.process is not None
    assert training_pid(e2e_client, job_id) not in {pool_pid, worker.process.pid}
    assert not is_running(training_pid(e2e_client, job_id))

    held_out = make_images(per_class=10, seed=99)
    images = [base64.b64encode(png_bytes(sample.image)).decode() for sample in held_out]
    response = e2e_client.post("/predict", json={"model_id": job["model_id"], "images": images})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    hits = [
        ranked[0]["label"] == sample.label
        for ranked, sample in zip(predictions, held_out, strict=True)
    ]
    assert sum(hits) / len(hits) >= 0.8
    assert {entry["label"] for entry in predictions[0]} == set(DEFAULT_CLASSES)

    model_record = e2e_client.get(f"/models/{job['model_id']}").json()
    assert model_record["job_id"] == job_id
    assert sorted(model_record["labels"]) == sorted(DEFAULT_CLASSES)


@pytest.mark.backend_independent  # the captions objective; the path is the classification one's
def test_a_captions_set_trains_and_matches_images_with_texts(e2e_client: TestClient) -> None:
    archive = captions_zip(make_images(per_class=30, seed=5))
    upload = e2e_client.post("/datasets", files={"file": ("captions.zip", archive)})
    assert upload.status_code == 201, upload.text
    assert upload.json()["kind"] == "captions"
    job = wait_until(e2e_client, start_job(e2e_client, upload.json()["id"]), FINISHED)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["val_mean_recall_at_1"] >= 0.8

    held_out = make_images(per_class=5, seed=77)
    texts = [f"a {label}" for label in DEFAULT_CLASSES]
    response = e2e_client.post(
        "/predict",
        json={
            "model_id": job["model_id"],
            "images": [base64.b64encode(png_bytes(sample.image)).decode() for sample in held_out],
            "texts": texts,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["similarity"]) == len(held_out) and len(body["similarity"][0]) == len(texts)
    best = [max(range(len(texts)), key=row.__getitem__) for row in body["probabilities"]]
    hits = [
        texts[index] == f"a {sample.label}" for index, sample in zip(best, held_out, strict=True)
    ]
    assert sum(hits) / len(hits) >= 0.8


@pytest.mark.backend_independent  # the error's text and the worker's next job
def test_a_failing_job_fails_clearly_and_the_worker_takes_the_next(
    e2e_client: TestClient, uploaded_dataset: str
) -> None:
    failing = start_job(e2e_client, uploaded_dataset, base_model="clipft-tests/no-such-model")
    following = start_job(
        e2e_client, uploaded_dataset, hyperparameters={**HYPERPARAMETERS, "epochs": 1}
    )
    failed = wait_until(e2e_client, failing, FINISHED)
    assert failed["status"] == "failed"
    assert "clipft-tests/no-such-model" in failed["error"]
    assert wait_until(e2e_client, following, FINISHED)["status"] == "succeeded"


@pytest.mark.faults
@pytest.mark.backend_independent  # a crash of the training process, not of a server
def test_a_crashed_training_process_fails_its_job_and_the_same_worker_takes_the_next(
    e2e_client: TestClient, uploaded_dataset: str, worker: WorkerProcess, crash_file: Path
) -> None:
    crash_file.write_text("SIGSEGV")
    one_epoch = {**HYPERPARAMETERS, "epochs": 1}
    crashing = start_job(e2e_client, uploaded_dataset, hyperparameters=one_epoch)
    following = start_job(e2e_client, uploaded_dataset, hyperparameters=one_epoch)
    crashed = wait_until(e2e_client, crashing, FINISHED)
    assert crashed["status"] == "failed"
    assert crashed["error"] == "training process crashed (SIGSEGV)"
    assert wait_until(e2e_client, following, FINISHED)["status"] == "succeeded"
    assert attempt_worker(e2e_client, following) == attempt_worker(e2e_client, crashing)
    assert worker.process is not None and worker.process.poll() is None


def test_cancelling_a_running_job_stops_its_training_process(
    e2e_client: TestClient, uploaded_dataset: str
) -> None:
    job_id = start_job(
        e2e_client, uploaded_dataset, hyperparameters={**HYPERPARAMETERS, "epochs": 500}
    )
    deadline = time.monotonic() + 120
    while e2e_client.get(f"/jobs/{job_id}").json()["progress"]["step"] < 2:
        assert time.monotonic() < deadline, "the job never made progress"
        time.sleep(0.1)
    pid = training_pid(e2e_client, job_id)
    assert is_running(pid)
    assert e2e_client.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_until(e2e_client, job_id, FINISHED, timeout=30)
    assert job["status"] == "cancelled"
    assert job["progress"]["epoch"] < 500 and job["model_id"] is None
    assert not is_running(pid)


def paused_worker(settings: Settings, log_path: Path, order_file: Path) -> WorkerProcess:
    """A worker whose next training process holds at the first step of epoch 3 until the test lets
    it go: a job certainly mid-run, whatever the machine's speed, with epoch 1's checkpoint
    announced (a checkpoint is written in the background and announced once the next is due)."""
    order_file.write_text("PAUSE@3")
    return WorkerProcess(settings, log_path, extra_env={CRASH_FILE_VARIABLE: str(order_file)})


def requeue_once_stale(settings: Settings, job_id: str, timeout_seconds: float = 30) -> None:
    """Run the reconciler until the job's heartbeat has gone stale and it is put back."""
    deadline = time.monotonic() + timeout_seconds
    while job_id not in reconcile_once(settings).requeued:
        assert time.monotonic() < deadline, "the job was never requeued"
        time.sleep(0.2)


def finish_with_another_worker(
    settings: Settings, client: TestClient, job_id: str, log_path: Path
) -> dict[str, Any]:
    """Start a second worker, let it take the requeued job to its end, stop it."""
    second = WorkerProcess(settings, log_path).start()
    try:
        return wait_until(client, job_id, FINISHED)
    finally:
        second.stop()


EPOCHS_AROUND_A_FAULT = {**HYPERPARAMETERS, "epochs": 4}


@pytest.fixture
def alone(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    """Settings for a test that runs the reconciler (a queue and a database of its own, a short
    heartbeat timeout), and a ready dataset in that database."""
    quick = queue_settings(settings).model_copy(update={"heartbeat_timeout_seconds": 1.0})
    with own_database(quick, tmp_path) as own:
        yield own, make_ready_dataset(own)


@pytest.fixture
def hosts(
    alone: tuple[Settings, str], seaweedfs: SeaweedS3, s3_bucket: str, tmp_path: Path
) -> dict[str, Settings]:
    """An api host and two worker hosts, each with its own empty data dir, that share only the
    database, the broker and a bucket (a prefix of its own in the session's SeaweedFS)."""
    own, _ = alone
    bucket = seaweedfs.settings(f"s3://{s3_bucket}/hosts-{uuid.uuid4().hex[:8]}")
    shared = {
        name: getattr(bucket, name)
        for name in ("storage_url", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key")
    }
    return {
        host: own.model_copy(update={**shared, "data_dir": tmp_path / host})
        for host in ("api", "worker-1", "worker-2", "second-api")
    }


@pytest.mark.faults
def test_on_separate_hosts_a_killed_worker_s_job_resumes_on_another_from_the_bucket(
    hosts: dict[str, Settings], tmp_path: Path
) -> None:
    order = tmp_path / "pause"
    api = hosts["api"]
    with TestClient(create_app(api, run_reconciler=False)) as client:
        uploaded = client.post(
            "/datasets",
            files={"file": ("shapes.zip", classification_zip(make_images(per_class=30)), "z")},
        )
        assert uploaded.status_code == 201, uploaded.text
        first = paused_worker(hosts["worker-1"], tmp_path / "first.log", order).start()
        job_id = start_job(client, uploaded.json()["id"], hyperparameters=EPOCHS_AROUND_A_FAULT)
        wait_for_file(paused_marker(order))  # epoch 3 has begun
        assert wait_for_event(client, job_id, "checkpoint")
        first.kill()
        paused_marker(order).unlink()
        # Its training process went with it: nothing holds the GPU for a job nobody runs.
        assert wait_until_gone(training_pid(client, job_id))
        requeue_once_stale(api, job_id)
        requeued = client.get(f"/jobs/{job_id}").json()
        assert requeued["status"] == "queued" and requeued["attempt"] == 1

        job = finish_with_another_worker(hosts["worker-2"], client, job_id, tmp_path / "2.log")
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        evaluations = [
            event["data"]["epoch"]
            for event in client.get(f"/jobs/{job_id}/events").json()
            if event["type"] == "evaluation"
        ]
        # Resumed from the bucket's checkpoint: the base model and epoch 1 are not redone.
        assert evaluations.count(0) == 1 and evaluations.count(1) == 1
        assert sorted(set(evaluations)) == [0, 1, 2, 3, 4]
        resumed = events_of(client, job_id, "resume")
    # Worker 2 had nothing of attempt 1 but what it fetched from the bucket, and once the job
    # succeeded it kept no copy of any checkpoint (the api host never had one).
    assert [event["data"]["checkpoint"] for event in resumed] in (["epoch-1"], ["epoch-2"])
    assert not checkpoints_dir(hosts["worker-2"].data_dir, job_id).exists()
    assert not (hosts["api"].data_dir / "jobs").exists()
    # Worker 1 died holding attempt 1's copies; a worker starting on its host sweeps them, and
    # the folder of a job that no longer exists.
    killed_host = hosts["worker-1"].data_dir
    assert any(checkpoints_dir(killed_host, job_id).glob("attempt-1/epoch-*"))
    deleted_job = killed_host / "jobs" / uuid.uuid4().hex
    (deleted_job / "checkpoints").mkdir(parents=True)
    assert sorted(sweep_local_copies(hosts["worker-1"])) == sorted([job_id, deleted_job.name])
    assert not checkpoints_dir(killed_host, job_id).exists() and not deleted_job.exists()
    # Nothing of the job is left only on a disk: the model is in the bucket, the checkpoints
    # (no longer needed) are not.
    store = open_store(api)
    assert read_manifest(store, f"models/{job['model_id']}") is not None
    assert store.list(f"jobs/{job_id}/") == []
    # An api host that never saw the job serves the model from the bucket.
    with TestClient(create_app(hosts["second-api"], run_reconciler=False)) as elsewhere:
        images = make_images(per_class=2, seed=7)
        answer = elsewhere.post(
            "/predict",
            json={
                "model_id": job["model_id"],
                "images": [base64.b64encode(png_bytes(item.image)).decode() for item in images],
            },
        )
    assert answer.status_code == 200, answer.text
    predicted = [ranked[0]["label"] for ranked in answer.json()["predictions"]]
    hits = sum(label == item.label for label, item in zip(predicted, images, strict=True))
    assert hits / len(images) >= 0.8, predicted


@pytest.mark.faults
def test_a_worker_paused_past_its_heartbeat_wakes_up_to_find_its_job_done_and_touches_nothing(
    alone: tuple[Settings, str], tmp_path: Path
) -> None:
    """The fault hunt's SIGSTOP: the paused attempt must not prune, fail or overwrite."""
    own, dataset_id = alone
    order = tmp_path / "pause"
    with TestClient(create_app(own, run_reconciler=False)) as client:
        first = paused_worker(own, tmp_path / "first.log", order).start()
        assert first.process is not None
        job_id = start_job(client, dataset_id, hyperparameters=EPOCHS_AROUND_A_FAULT)
        wait_for_file(paused_marker(order))
        assert wait_for_event(client, job_id, "checkpoint")
        paused = [first.process.pid, training_pid(client, job_id)]
        os.killpg(first.process.pid, signal.SIGSTOP)
        os.kill(paused[1], signal.SIGSTOP)  # the training process has a group of its own
        try:
            requeue_once_stale(own, job_id)
            done = finish_with_another_worker(own, client, job_id, tmp_path / "second.log")
            assert done["status"] == "succeeded", done["error"]
            assert done["attempt"] == 2
            events_before_waking = len(client.get(f"/jobs/{job_id}/events").json())
        finally:
            paused_marker(order).unlink(missing_ok=True)
            for pid in paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.process.pid, signal.SIGCONT)
        # Awake again, the first attempt trains on, finds its lease gone at its next write and
        # stops: its training process ends by itself, with the job left as attempt 2 made it.
        assert wait_until_gone(paused[1], timeout_seconds=60)
        first.stop()
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["attempt"] == 2
        assert job["model_id"] == done["model_id"] and job["error"] is None
        assert len(client.get(f"/jobs/{job_id}/events").json()) == events_before_waking
        model_folder = own.data_dir / "models" / str(job["model_id"])
        assert CLIPModel.from_pretrained(model_folder).config.vision_config.image_size == 32
        attempt_two = checkpoints_dir(own.data_dir, job_id) / "attempt-2"
        assert list(attempt_two.glob("epoch-*/model.safetensors"))
