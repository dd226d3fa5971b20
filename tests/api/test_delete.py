"""DELETE of datasets, jobs and models: rows and files go; what is still in use answers 409."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import dataset_dir, job_dir, model_dir
from app.orm import JobEvent, Model
from tests.api.test_auth import png_base64
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
    (job_folder / "checkpoints").mkdir(parents=True)
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert client.get(f"/jobs/{job['id']}").status_code == 404
    assert client.get(f"/jobs/{job['id']}/events").status_code == 404
    assert not job_folder.exists()
    with session_scope(settings.resolved_database_url) as session:
        assert not session.scalars(select(JobEvent).where(JobEvent.job_id == job["id"])).all()

    assert client.delete(f"/datasets/{dataset_id}").status_code == 204


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
