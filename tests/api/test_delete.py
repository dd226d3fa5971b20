"""DELETE of datasets, jobs and models: rows and files go; what is still in use answers 409."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from app.core.config import Settings
from app.core.db import get_engine, session_scope
from app.core.objects.factory import open_store
from app.core.objects.folders import publish_folder
from app.core.storage import dataset_dir, job_dir, model_dir
from app.orm import Job, JobEvent, Model
from tests.api.predict_requests import png_base64
from tests.conftest import make_ready_dataset
from tests.model_factory import register_model


def test_deleting_a_dataset_removes_its_row_and_files(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = make_ready_dataset(settings)
    folder = dataset_dir(settings.data_dir, dataset_id)
    assert folder.is_dir()
    response = client.delete(f"/datasets/{dataset_id}")
    assert response.status_code == 204, response.text
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert dataset_id not in {d["id"] for d in client.get("/datasets?limit=200").json()["items"]}
    assert not folder.exists()
    assert not list(folder.parent.glob(f".{dataset_id}*"))
    assert client.delete(f"/datasets/{dataset_id}").status_code == 404


def test_a_dataset_a_job_uses_stays_until_the_job_is_gone(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = make_ready_dataset(settings)
    job = client.post("/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip"}).json()
    refused = client.delete(f"/datasets/{dataset_id}")
    assert refused.status_code == 409
    assert job["id"] in refused.json()["detail"]
    assert dataset_dir(settings.data_dir, dataset_id).is_dir()

    # A queued job is cancelled before it can be deleted.
    queued = client.delete(f"/jobs/{job['id']}")
    assert queued.status_code == 409
    assert "cancel it first" in queued.json()["detail"]
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 200
    job_folder = job_dir(settings.data_dir, job["id"])
    (job_folder / "checkpoints" / "attempt-1" / "epoch-1").mkdir(parents=True)
    (job_folder / "checkpoints" / "attempt-1" / "epoch-1" / "weights").write_bytes(b"w")
    store = open_store(settings)  # and published, as a worker on another machine does
    publish_folder(
        store, job_folder / "checkpoints/attempt-1/epoch-1", f"jobs/{job['id']}/checkpoints/a"
    )
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert store.list(f"jobs/{job['id']}/") == []
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert client.get(f"/jobs/{job['id']}/events").status_code == 404
    assert not job_folder.exists()
    with session_scope(settings.resolved_database_url) as session:
        assert not session.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all()

    assert client.delete(f"/datasets/{dataset_id}").status_code == 204


def jobs_on(settings: Settings, dataset_id: str) -> list[str]:
    with session_scope(settings.resolved_database_url) as session:
        return list(session.scalars(select(Job.id).where(Job.dataset_id == dataset_id)))


@contextmanager
def on_statement(
    settings: Settings, moment: str, prefix: str, do: Callable[[], None]
) -> Iterator[None]:
    """Run `do` once, when the api's connection is at `moment` of a statement starting `prefix`."""
    engine = get_engine(settings.resolved_database_url, settings.database_pool)
    done = threading.Event()

    def hook(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith(prefix) and not done.is_set():
            done.set()
            do()

    event.listen(engine, moment, hook)
    try:
        yield
    finally:
        event.remove(engine, moment, hook)


def test_a_dataset_deleted_as_a_job_is_created_on_it_is_409_for_the_job(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = make_ready_dataset(settings, per_class=2)
    deletions: list[int] = []

    # The job's request has found the dataset; the delete is answered before the job is
    # inserted.
    def delete() -> None:
        deletions.append(client.delete(f"/datasets/{dataset_id}").status_code)

    with on_statement(settings, "before_cursor_execute", "INSERT INTO job ", delete):
        created = client.post("/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip"})
    assert deletions == [204]
    assert (created.status_code, created.json()) == (
        409,
        {"detail": f"dataset {dataset_id} was deleted while the job was being created"},
    )
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert jobs_on(settings, dataset_id) == []


def test_a_dataset_deleted_as_a_job_on_it_commits_is_409_for_the_delete(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = make_ready_dataset(settings, per_class=2)
    deletions: list[httpx.Response] = []
    deleting = threading.Event()
    delete = threading.Thread(
        target=lambda: deletions.append(client.delete(f"/datasets/{dataset_id}"))
    )

    def delete_while_uncommitted() -> None:
        # The job is inserted, not yet committed: the delete finds no job using the dataset
        # and goes on to remove it, which waits for the job's transaction and then fails.
        delete.start()
        assert deleting.wait(timeout=30)

    with (
        on_statement(settings, "before_cursor_execute", "DELETE FROM dataset ", deleting.set),
        on_statement(
            settings, "after_cursor_execute", "INSERT INTO job ", delete_while_uncommitted
        ),
    ):
        created = client.post("/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip"})
        delete.join(timeout=60)
    assert created.status_code == 201
    [deleted] = deletions
    meanwhile = f"dataset {dataset_id} is used by a job created meanwhile: delete that job first"
    assert (deleted.status_code, deleted.json()) == (409, {"detail": meanwhile})
    assert client.get(f"/datasets/{dataset_id}").status_code == 200
    assert jobs_on(settings, dataset_id) == [created.json()["id"]]


def test_a_model_is_deleted_before_its_job_and_then_no_longer_serves(
    client: TestClient, settings: Settings
) -> None:
    model_id = register_model(settings=settings)
    with session_scope(settings.resolved_database_url) as session:
        job_id = session.scalars(select(Model.job_id).where(Model.id == model_id)).one()
    body = {"model_id": model_id, "images": [png_base64()]}
    assert client.post("/predict", json=body).status_code == 200  # loaded into the cache

    refused = client.delete(f"/jobs/{job_id}")
    assert refused.status_code == 409
    assert model_id in refused.json()["detail"]

    assert client.delete(f"/models/{model_id}").status_code == 204
    assert client.get(f"/models/{model_id}").status_code == 404
    gone = client.post("/predict", json=body)
    assert gone.status_code == 404, gone.text
    assert not model_dir(settings.data_dir, model_id).exists()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["model_id"] is None and job["status"] == "succeeded"

    assert client.delete(f"/jobs/{job_id}").status_code == 204
    assert client.delete(f"/models/{model_id}").status_code == 404
