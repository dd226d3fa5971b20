"""Faults that must heal, against real processes: a Celery worker, a Redis that goes away."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.embedded_redis import EmbeddedRedis
from app.main import create_app
from tests.worker.celery_process import WorkerProcess
from tests.worker.jobs import FINISHED, queue_settings, start_job, wait_for_file, wait_until
from worker.training.fault_injection import CRASH_FILE_VARIABLE, paused_marker

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A broker of this module's own, so that restarting it disturbs no other test."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("fault-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_settings(settings: Settings, own_redis: EmbeddedRedis) -> Settings:
    return queue_settings(settings).model_copy(update={"redis_url": own_redis.url})


@pytest.fixture(scope="module")
def pause_order(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written by a test, it holds the worker's next training process at a step (once)."""
    return tmp_path_factory.mktemp("pause") / "pause-next-run"


@pytest.fixture(scope="module")
def fault_worker(
    fault_settings: Settings, tmp_path_factory: pytest.TempPathFactory, pause_order: Path
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        fault_settings,
        tmp_path_factory.mktemp("logs") / "worker.log",
        extra_env={CRASH_FILE_VARIABLE: str(pause_order)},
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def fault_client(fault_settings: Settings, fault_worker: WorkerProcess) -> Iterator[TestClient]:
    with TestClient(create_app(fault_settings, run_reconciler=False)) as client:
        yield client


def test_a_broker_blip_does_not_stop_a_running_job(
    fault_client: TestClient,
    own_redis: EmbeddedRedis,
    fault_worker: WorkerProcess,
    pause_order: Path,
) -> None:
    from tests.conftest import make_ready_dataset

    dataset_id = make_ready_dataset(fault_client.app.state.settings, per_class=20)
    pause_order.write_text("PAUSE@2")  # the first step of epoch 2
    job_id = start_job(
        fault_client,
        dataset_id,
        hyperparameters={"epochs": 3, "batch_size": 8, "learning_rate": 2e-3},
    )
    wait_for_file(paused_marker(pause_order))  # the job is running, in the middle of epoch 2

    # The broker goes away mid-training and comes back once the worker has noticed.
    log_before = fault_worker.log_path.read_bytes()
    own_redis.stop()
    wait_for_log(fault_worker, after=len(log_before), text=b"Connection to broker lost")
    own_redis.start()
    paused_marker(pause_order).unlink()

    finished = wait_until(fault_client, job_id, FINISHED)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempt"] == 1  # the run went on: no second attempt was needed
    assert fault_worker.process is not None and fault_worker.process.poll() is None


def wait_for_log(worker: WorkerProcess, *, after: int, text: bytes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_path.read_bytes()[after:]:
        assert time.monotonic() < deadline, f"the worker never logged {text!r}"
        time.sleep(0.1)
