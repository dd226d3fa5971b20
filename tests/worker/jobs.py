"""Jobs for the worker tests: started through the API on a queue of their own, and waited on."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.migrate import upgrade_to_head
from tests.conftest import empty_database

HYPERPARAMETERS = {"epochs": 5, "batch_size": 16, "learning_rate": 2e-3, "weight_decay": 0.05}
FINISHED = {"succeeded", "failed", "cancelled"}


def new_job(client: TestClient, dataset_id: str, **hyperparameters: Any) -> str:
    response = client.post(
        "/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": "tiny-clip",
            "hyperparameters": {**HYPERPARAMETERS, **hyperparameters},
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def queue_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"train_queue": f"train-e2e-{uuid.uuid4().hex[:8]}"})


@contextlib.contextmanager
def own_database(settings: Settings, folder: Path) -> Iterator[Settings]:
    """`settings` on a migrated database of their own, for tests that run the reconciler.

    A reconciler pass sends every long-waiting job and requeues every silent one it finds, to
    its own queue. In the session's shared database those are other tests' jobs: a full-suite
    run saw a test's second worker train a dozen of them while the job under test sat `queued`
    past its 180 s.
    """
    with contextlib.contextmanager(empty_database)(folder / "own.db") as database_url:
        upgrade_to_head(database_url)
        yield settings.model_copy(update={"database_url": database_url})


def start_job(client: TestClient, dataset_id: str, **overrides: Any) -> str:
    body = {
        "dataset_id": dataset_id,
        "base_model": "tiny-clip",
        "hyperparameters": HYPERPARAMETERS,
        **overrides,
    }
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_until(
    client: TestClient, job_id: str, statuses: set[str], timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.2)


def events_of(client: TestClient, job_id: str, type: str) -> list[dict[str, Any]]:
    return [event for event in client.get(f"/jobs/{job_id}/events").json() if event["type"] == type]


def wait_for_event(
    client: TestClient, job_id: str, type: str, timeout_seconds: float = 60
) -> list[dict[str, Any]]:
    """The job's events of `type`, once there is one. The supervisor records a checkpoint only
    after uploading it, so the row can trail what the training process has already moved on to."""
    deadline = time.monotonic() + timeout_seconds
    while not (found := events_of(client, job_id, type)):
        assert time.monotonic() < deadline, f"no {type} event in {timeout_seconds} s"
        time.sleep(0.1)
    return found


def wait_for_file(path: Path, timeout_seconds: float = 120) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)
