"""A data-parallel job through the real worker: a rank killed from outside ends the attempt,
the job is queued again (the attempt counted) and resumes on two ranks from its checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.ml.synthetic import classification_zip, make_images
from tests.worker.celery_process import WorkerProcess
from tests.worker.jobs import (
    FINISHED,
    HYPERPARAMETERS,
    events_of,
    queue_settings,
    start_job,
    wait_until,
)
from worker.training.fault_injection import CRASH_FILE_VARIABLE

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.backend_independent]


def test_a_killed_rank_queues_the_job_again_and_it_resumes_on_two_ranks_to_success(
    settings: Settings, tmp_path: Path
) -> None:
    # The default collective timeout (300 s): the killed rank's peer is stopped by the
    # launcher, not by a timeout, and a short one could fail the first collective while the
    # other rank still loads on a busy machine (test_distributed.py bounds a kill's time).
    two_devices = queue_settings(settings).model_copy(update={"worker_devices": 2})
    order = tmp_path / "kill-a-rank"
    # The first step of epoch 3: epoch 1's checkpoint is announced by then (a checkpoint is
    # written in the background and announced once the next is due; at epoch 2 it may not be).
    order.write_text("SIGKILL@3")
    worker = WorkerProcess(
        two_devices,
        tmp_path / "worker.log",
        extra_env={
            CRASH_FILE_VARIABLE: str(order),
            "CLIPFT_WORKER_DEVICES": "2",
        },
    ).start()
    try:
        with TestClient(create_app(two_devices, run_reconciler=False)) as client:
            archive = classification_zip(make_images(per_class=12, seed=0))
            upload = client.post("/datasets", files={"file": ("s.zip", archive, "application/zip")})
            assert upload.status_code == 201, upload.text
            hyperparameters = {**HYPERPARAMETERS, "epochs": 4, "devices": 2}
            job_id = start_job(client, upload.json()["id"], hyperparameters=hyperparameters)
            job = wait_until(client, job_id, FINISHED, timeout=240)
            statuses = [event["message"] for event in events_of(client, job_id, "status")]
            resumed = events_of(client, job_id, "resume")
            evaluations = [
                event["data"]["epoch"] for event in events_of(client, job_id, "evaluation")
            ]
    finally:
        worker.stop()

    assert not order.exists()  # the rank was killed
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2 and job["model_id"]
    assert any(
        re.fullmatch(
            r"queued again: RankLost: rank [01] of 2 was killed by SIGKILL \(the next attempt "
            r"resumes from the last checkpoint\)",
            message,
        )
        for message in statuses
    ), statuses
    # The second attempt started from a checkpoint (epoch 2's, if it was announced before the
    # kill): the base model and epoch 1 are not redone.
    assert [event["data"]["checkpoint"] for event in resumed] in (["epoch-1"], ["epoch-2"])
    assert evaluations.count(0) == 1 and evaluations.count(1) == 1
    assert sorted(set(evaluations)) == [0, 1, 2, 3, 4]
