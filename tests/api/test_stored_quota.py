"""The stored-bytes quota: everything a tenant keeps on the server counts, `GET /usage` shows
it by kind to that tenant only, and over it uploads and new jobs answer 429."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import dataset_dir, datasets_root, folder_bytes, model_dir, new_id
from app.main import create_app
from app.orm.tables import Dataset, Job, Model
from tests.api.jobs import set_status
from tests.api.tenants import bearer, new_key
from tests.conftest import make_ready_dataset
from tests.datasets_helpers import class_zip
from tests.model_factory import register_model

ARCHIVE = class_zip({"circle": 4, "square": 4})


@pytest.fixture(scope="module")
def keyed_client(settings: Settings) -> Iterator[TestClient]:
    """Authentication on, no stored-bytes quota."""
    keyed = settings.model_copy(update={"auth_disabled": False})
    with TestClient(create_app(keyed, run_reconciler=False)) as test_client:
        yield test_client


def fresh_tenant() -> str:
    return f"s{uuid.uuid4().hex[:10]}"


def count(settings: Settings, table: type[Dataset] | type[Job], tenant: str) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return int(
            session.scalar(select(func.count()).select_from(table).where(table.tenant == tenant))
            or 0
        )


def test_usage_shows_the_callers_stored_bytes_by_kind_and_no_other_tenants(
    keyed_client: TestClient, settings: Settings
) -> None:
    tenant, other = fresh_tenant(), fresh_tenant()
    key, other_key = new_key(settings, tenant), new_key(settings, other)
    model_id = register_model(settings=settings, tenant=tenant)
    files = {"file": ("shapes.zip", ARCHIVE, "application/zip")}
    upload = keyed_client.post("/datasets", files=files, headers=bearer(key))
    assert upload.status_code == 201, upload.text
    job_id = keyed_client.get("/models/" + model_id, headers=bearer(key)).json()["job_id"]
    set_status(settings, job_id, checkpoint_bytes=1234)

    usage = keyed_client.get("/usage", headers=bearer(key))
    assert usage.status_code == 200, usage.text
    body = usage.json()
    model_bytes = folder_bytes(model_dir(settings.data_dir, model_id))
    dataset_bytes = folder_bytes(dataset_dir(settings.data_dir, upload.json()["id"]))
    assert model_bytes > 100_000 and dataset_bytes > 0
    assert body == {
        "tenant": tenant,
        "datasets_bytes": dataset_bytes,
        "prepared_bytes": 0,
        "models_bytes": model_bytes,
        "checkpoints_bytes": 1234,
        "uploads_in_progress_bytes": 0,
        "total_bytes": dataset_bytes + model_bytes + 1234,
        "max_stored_bytes": None,
        "max_upload_bytes": None,
    }
    # Another tenant's key sees only its own (nothing), never these bytes.
    theirs = keyed_client.get("/usage", headers=bearer(other_key)).json()
    assert theirs["tenant"] == other and theirs["total_bytes"] == 0
    assert keyed_client.get("/usage").status_code == 401


def test_over_its_stored_bytes_a_tenant_can_neither_upload_nor_start_jobs_until_it_deletes(
    settings: Settings,
) -> None:
    tenant = fresh_tenant()
    model_id = register_model(settings=settings, tenant=tenant)
    model_bytes = folder_bytes(model_dir(settings.data_dir, model_id))
    # Room for the model and a little: not for another dataset, nor for a job's checkpoints.
    limited = settings.model_copy(
        update={"auth_disabled": False, "tenant_max_stored_bytes": model_bytes + 100}
    )
    key = new_key(limited, tenant)
    dataset_id = make_ready_dataset(limited, tenant=tenant, per_class=2)
    failed_job = make_failed_job(limited, tenant, dataset_id)
    datasets_before = count(limited, Dataset, tenant)
    jobs_before = count(limited, Job, tenant)
    folders_before = set(datasets_root(settings.data_dir).iterdir())
    files = {"file": ("shapes.zip", ARCHIVE, "application/zip")}
    job_body = {"dataset_id": dataset_id, "base_model": "tiny-clip"}
    with TestClient(create_app(limited, run_reconciler=False)) as client:
        upload = client.post("/datasets", files=files, headers=bearer(key))
        assert upload.status_code == 429, upload.text
        assert upload.headers["retry-after"]
        detail = upload.json()["detail"]
        assert f"stores {model_bytes} bytes of its {model_bytes + 100}" in detail
        assert f"models {model_bytes}" in detail and "delete models, jobs or datasets" in detail
        # A job would write checkpoints and a model: it waits too, until the model fits.
        set_status(limited, failed_job, checkpoint_bytes=100)
        for refused in (
            client.post("/jobs", json=job_body, headers=bearer(key)),
            client.post(f"/jobs/{failed_job}/retry", headers=bearer(key)),
        ):
            assert refused.status_code == 429, refused.text
            assert f"stores {model_bytes + 100} bytes" in refused.json()["detail"]
            assert "checkpoints 100" in refused.json()["detail"]
        # Nothing was written: no dataset row or folder, no job row.
        assert count(limited, Dataset, tenant) == datasets_before
        assert count(limited, Job, tenant) == jobs_before
        assert set(datasets_root(settings.data_dir).iterdir()) == folders_before
        assert client.get(f"/jobs/{failed_job}", headers=bearer(key)).json()["status"] == "failed"

        # Deleting the model frees its bytes: the job starts, and a usage shows them gone.
        assert client.delete(f"/models/{model_id}", headers=bearer(key)).status_code == 204
        assert client.get("/usage", headers=bearer(key)).json()["models_bytes"] == 0
        started = client.post("/jobs", json=job_body, headers=bearer(key))
        assert started.status_code == 201, started.text
        with session_scope(limited.resolved_database_url) as session:
            assert session.get(Model, model_id) is None


def make_failed_job(settings: Settings, tenant: str, dataset_id: str) -> str:
    job_id = new_id()
    with session_scope(settings.resolved_database_url) as session:
        session.add(
            Job(
                id=job_id,
                tenant=tenant,
                name="failed",
                status="failed",
                dataset_id=dataset_id,
                base_model="tiny-clip",
                hyperparameters={},
            )
        )
    return job_id
