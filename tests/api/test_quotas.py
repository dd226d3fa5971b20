"""Per-tenant quotas: active jobs, upload bytes and /predict rate answer 429 with Retry-After."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import dataset_dir, datasets_root, folder_bytes
from app.main import create_app
from app.ml.synthetic import photo_like, png_bytes
from app.orm.tables import Dataset, UploadReservation
from tests.api.tenants import bearer, new_key
from tests.conftest import make_ready_dataset
from tests.datasets_helpers import class_zip, make_zip
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


def noisy_archive(images: int, side: int, seed: int) -> bytes:
    """Class folders of photo-like PNGs, which neither the zip nor the stored copies shrink."""
    return make_zip(
        (f"{label}/{number}.png", png_bytes(photo_like(side, side, seed=seed + number)))
        for label in ("circle", "square")
        for number in range(images // 2)
    )


def tenant_bytes(settings: Settings, tenant: str) -> tuple[int, int, list[str]]:
    """The tenant's counted stored bytes, its reservations left, and its datasets' ids."""
    with session_scope(settings.resolved_database_url) as session:
        stored = session.scalar(
            select(func.coalesce(func.sum(Dataset.stored_bytes), 0)).where(Dataset.tenant == tenant)
        )
        reservations = session.scalar(
            select(func.count())
            .select_from(UploadReservation)
            .where(UploadReservation.tenant == tenant)
        )
        ids = list(session.scalars(select(Dataset.id).where(Dataset.tenant == tenant)))
    return int(stored or 0), int(reservations or 0), ids


def test_concurrent_uploads_never_store_more_than_the_quota(settings: Settings) -> None:
    archive = noisy_archive(images=8, side=56, seed=3)
    quota = int(len(archive) * 8.5)
    quota_settings = settings.model_copy(
        update={"auth_disabled": False, "tenant_max_upload_bytes": quota}
    )
    tenant = fresh_tenant()
    key = new_key(quota_settings, tenant)
    datasets_root(settings.data_dir).mkdir(parents=True, exist_ok=True)
    folders_before = {path.name for path in datasets_root(settings.data_dir).iterdir()}
    with TestClient(create_app(quota_settings, run_reconciler=False)) as quota_client:

        def send(_: int) -> int:
            files = {"file": ("shop.zip", archive, "application/zip")}
            return quota_client.post("/datasets", files=files, headers=bearer(key)).status_code

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(send, range(20)))

    stored, reservations, dataset_ids = tenant_bytes(quota_settings, tenant)
    assert set(answers) <= {201, 429}, answers
    passed = answers.count(201)
    assert 1 <= passed <= 8 and len(dataset_ids) == passed, answers
    # What the datasets keep on disk is what is counted, and together it fits in the quota.
    on_disk = [
        folder_bytes(dataset_dir(settings.data_dir, dataset_id)) for dataset_id in dataset_ids
    ]
    assert stored == sum(on_disk) <= quota
    assert min(on_disk) > 0.9 * len(archive)
    # Nothing is left reserved, and the refused uploads left no folder behind.
    assert reservations == 0
    folders_after = {path.name for path in datasets_root(settings.data_dir).iterdir()}
    assert folders_after - folders_before == set(dataset_ids)


def test_the_quota_counts_the_stored_images_not_the_smaller_zip(settings: Settings) -> None:
    def jpeg(seed: int) -> bytes:
        buffer = io.BytesIO()
        photo_like(256, 256, seed=seed).save(buffer, format="JPEG", quality=40)
        return buffer.getvalue()

    archive = make_zip(
        (f"{label}/{number}.jpg", jpeg(seed=number))
        for label in ("circle", "square")
        for number in range(2)
    )
    quota = 3 * len(archive)  # room for the zip three times, not for its PNGs
    quota_settings = settings.model_copy(
        update={"auth_disabled": False, "tenant_max_upload_bytes": quota}
    )
    tenant = fresh_tenant()
    key = new_key(quota_settings, tenant)
    datasets_root(settings.data_dir).mkdir(parents=True, exist_ok=True)
    folders_before = set(datasets_root(settings.data_dir).iterdir())
    with TestClient(create_app(quota_settings, run_reconciler=False)) as quota_client:
        response = quota_client.post(
            "/datasets",
            files={"file": ("photos.zip", archive, "application/zip")},
            headers=bearer(key),
        )
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert f"more than its {quota} bytes of uploads: this dataset's stored images take" in detail
    stored_bytes = int(detail.split("stored images take ")[1].split(" bytes")[0])
    assert stored_bytes > quota
    # Refused: no row, no reservation, no folder.
    assert tenant_bytes(quota_settings, tenant) == (0, 0, [])
    assert set(datasets_root(settings.data_dir).iterdir()) == folders_before


def test_a_reservation_left_by_a_dead_upload_stops_counting_after_the_grace(
    limited: Settings, limited_client: TestClient
) -> None:
    tenant = fresh_tenant()
    key = new_key(limited, tenant)
    held = limited.tenant_max_upload_bytes or 0
    with session_scope(limited.resolved_database_url) as session:
        session.add(UploadReservation(id=uuid.uuid4().hex, tenant=tenant, reserved_bytes=held))
    files = {"file": ("shapes.zip", ARCHIVE, "application/zip")}
    # An upload in progress holds the whole quota: nothing else fits.
    assert limited_client.post("/datasets", files=files, headers=bearer(key)).status_code == 429
    with session_scope(limited.resolved_database_url) as session:
        reservation = session.scalars(
            select(UploadReservation).where(UploadReservation.tenant == tenant)
        ).one()
        grace = timedelta(seconds=limited.orphan_upload_grace_seconds + 1)
        reservation.created_at = reservation.created_at - grace
    stored = limited_client.post("/datasets", files=files, headers=bearer(key))
    assert stored.status_code == 201, stored.text
    # The stale reservation is gone; the dataset's stored bytes count instead.
    assert tenant_bytes(limited, tenant)[1:] == (0, [stored.json()["id"]])
