"""SIGTERM of a worker mid-job (`docker compose restart worker`): the job gives way at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.storage import checkpoints_dir
from app.main import create_app
from tests.conftest import make_ready_dataset
from tests.worker.celery_process import WorkerProcess
from tests.worker.jobs import FINISHED, events_of, queue_settings, start_job, wait_until
from worker.training.fault_injection import CRASH_FILE_VARIABLE, paused_marker

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# Docker's grace period before it SIGKILLs the container.
GRACE_SECONDS = 30


def test_a_worker_stopped_mid_job_requeues_it_uncounted_and_the_next_worker_resumes_it(
    settings: Settings, tmp_path: Path
) -> None:
    own = queue_settings(settings)
    pause = tmp_path / "pause"
    with TestClient(create_app(own, run_reconciler=False)) as client:
        dataset_id = make_ready_dataset(own, per_class=8)
        # The run holds at the first step of epoch 2, once epoch 1 has left its checkpoint,
        # until it is asked to stop.
        pause.write_text("PAUSE@2")
        first = WorkerProcess(own, tmp_path / "first.log", {CRASH_FILE_VARIABLE: str(pause)})
        first.start()
        assert first.process is not None
        job_id = start_job(
            client,
            dataset_id,
            hyperparameters={"epochs": 3, "batch_size": 8, "learning_rate": 2e-3},
        )
        while not paused_marker(pause).exists():
            assert client.get(f"/jobs/{job_id}").json()["status"] in {"queued", "running"}
            time.sleep(0.1)

        stopped_at = time.monotonic()
        first.process.send_signal(signal.SIGTERM)  # the main process alone, as `docker stop`
        assert first.process.wait(timeout=GRACE_SECONDS) == 0
        exit_seconds = time.monotonic() - stopped_at
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "queued" and job["attempt"] == 0, job
        interrupted = checkpoints_dir(own.data_dir, job_id) / "attempt-1"
        assert (interrupted / "epoch-1" / "model.safetensors").is_file()

        second = WorkerProcess(own, tmp_path / "second.log").start()
        try:
            wait_until(client, job_id, {"running", *FINISHED})
            running_again_seconds = time.monotonic() - stopped_at
            done = wait_until(client, job_id, FINISHED)
        finally:
            second.stop()
        print(f"SIGTERM to exit {exit_seconds:.1f}s, to running again {running_again_seconds:.1f}s")
        assert exit_seconds < GRACE_SECONDS / 2
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 1
        # Resumed from epoch 1's checkpoint: the base model and epoch 1 are not redone.
        evaluated = [event["data"]["epoch"] for event in events_of(client, job_id, "evaluation")]
        assert sorted(evaluated) == [0, 1, 2, 3]
