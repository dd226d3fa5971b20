"""Per-tenant quotas: active jobs, upload bytes and /predict rate answer 429 with Retry-After."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.ml.synthetic import photo_like
from tests.api.test_auth import bearer, new_key
from tests.conftest import make_ready_dataset
from tests.datasets_helpers import class_zip
from tests.model_factory import register_model

ARCHIVE = class_zip({"circle": 4, "square": 4})


@pytest.fixture(scope="module")
def limited(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_disabled": False,
            "tenant_max_active_jobs": 2,
            "tenant_max_upload_bytes": len(ARCHIVE) + 1000,
            "tenant_predict_per_second": 2.0,
        }
    )


@pytest.fixture(scope="module")
def limited_client(limited: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(limited, run_reconciler=False)) as test_client:
        yield test_client


def fresh_tenant() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


def test_a_tenant_with_its_active_jobs_at_the_limit_waits(
    limited: Settings, limited_client: TestClient
) -> None:
    tenant = fresh_tenant()
    key, admin = new_key(limited, tenant), new_key(limited, "operators", admin=True)
    dataset_id = make_ready_dataset(limited, tenant=tenant)
    body = {"dataset_id": dataset_id, "base_model": "tiny-clip"}
    jobs = [limited_client.post("/jobs", json=body, headers=bearer(key)) for _ in range(2)]
    assert [job.status_code for job in jobs] == [201, 201]
    refused = limited_client.post("/jobs", json=body, headers=bearer(key))
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "2 queued or running jobs" in refused.json()["detail"]
    # An admin is not held to the quota, but the job it starts is the dataset's tenant's.
    by_admin = limited_client.post("/jobs", json=body, headers=bearer(admin))
    assert by_admin.status_code == 201
    for job in (jobs[0], by_admin):
        cancel = limited_client.post(f"/jobs/{job.json()['id']}/cancel", headers=bearer(admin))
        assert cancel.status_code == 200
    # Finished jobs free their places.
    assert limited_client.post("/jobs", json=body, headers=bearer(key)).status_code == 201


def test_a_tenant_stores_uploads_up_to_its_bytes_and_more_once_it_deletes(
    limited_client: TestClient, limited: Settings
) -> None:
    key = new_key(limited, fresh_tenant())
    files = {"file": ("shapes.zip", ARCHIVE, "application/zip")}
    first = limited_client.post("/datasets", files=files, headers=bearer(key))
    assert first.status_code == 201, first.text
    second = limited_client.post("/datasets", files=files, headers=bearer(key))
    assert second.status_code == 429, second.text
    assert "bytes of uploads" in second.json()["detail"]
    assert second.headers["retry-after"]
    # Another tenant has its own allowance.
    other = limited_client.post("/datasets", files=files, headers=bearer(new_key(limited, "x2")))
    assert other.status_code == 201
    deleted = limited_client.delete(f"/datasets/{first.json()['id']}", headers=bearer(key))
    assert deleted.status_code == 204
    again = limited_client.post("/datasets", files=files, headers=bearer(key))
    assert again.status_code == 201, again.text


def test_predictions_over_the_tenants_rate_answer_429_and_other_tenants_go_on(
    limited_client: TestClient, limited: Settings
) -> None:
    tenant, other_tenant = fresh_tenant(), fresh_tenant()
    model_id = register_model(settings=limited, tenant=tenant)
    other_model = register_model(settings=limited, tenant=other_tenant)
    key, other_key = new_key(limited, tenant), new_key(limited, other_tenant)
    buffer = io.BytesIO()
    photo_like(64, 48, seed=2).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()

    def predict(model: str, api_key: str) -> int:
        response = limited_client.post(
            "/predict", json={"model_id": model, "images": [image]}, headers=bearer(api_key)
        )
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert "requests per second" in response.json()["detail"]
        return response.status_code

    answers = [predict(model_id, key) for _ in range(6)]
    assert answers[:2] == [200, 200]
    assert 429 in answers
    assert predict(other_model, other_key) == 200


def test_concurrent_job_requests_never_pass_the_limit_together(
    limited: Settings, limited_client: TestClient
) -> None:
    tenant = fresh_tenant()
    key = new_key(limited, tenant)
    dataset_id = make_ready_dataset(limited, tenant=tenant)
    body = {"dataset_id": dataset_id, "base_model": "tiny-clip"}

    def create(_: int) -> int:
        return limited_client.post("/jobs", json=body, headers=bearer(key)).status_code

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(create, range(8)))
    assert sorted(answers) == [201, 201] + [429] * 6
