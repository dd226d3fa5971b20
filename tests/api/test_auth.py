"""API keys and tenants: every route but /health needs a key, and tenants never meet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.auth.keys import revoke_key
from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.orm import ApiKey
from tests.api.predict_requests import png_base64
from tests.api.tenants import bearer, new_key, tenant_with_rows
from tests.datasets_helpers import class_zip


@pytest.fixture(scope="module")
def secured(settings: Settings) -> Settings:
    # No cache: a revoked key must fail on the very next request in these tests.
    return settings.model_copy(update={"auth_disabled": False, "auth_cache_seconds": 0.0})


@pytest.fixture(scope="module")
def secured_client(secured: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(secured, run_reconciler=False)) as test_client:
        yield test_client


def test_production_refuses_to_serve_without_keys() -> None:
    production = {
        "environment": "production",
        "database_url": "postgresql+psycopg://clipft@db/clipft",
        "redis_url": "redis://redis:6379/0",
    }
    assert Settings(**production).auth_required
    with pytest.raises(ValidationError, match="only with API keys"):
        Settings(**production, auth_disabled=True)
    assert not Settings(environment="dev").auth_required
    assert Settings(environment="dev", auth_disabled=False).auth_required


def test_every_route_but_health_asks_for_a_key(secured_client: TestClient) -> None:
    assert secured_client.get("/health").status_code != 401
    schema = secured_client.get("/openapi.json", headers={}).json()
    for path, operations in schema["paths"].items():
        if path == "/health":
            continue
        concrete = path.format(
            dataset_id="x", job_id="x", model_id="x", webhook_id="x", upload_id="x"
        )
        for method in operations:
            for headers in ({}, bearer("clipft_" + "0" * 32 + "_" + "a" * 43), bearer("nonsense")):
                response = secured_client.request(method, concrete, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["detail"]


def test_a_key_is_stored_hashed_works_and_stops_working_once_revoked(
    secured: Settings, secured_client: TestClient
) -> None:
    key = new_key(secured, f"t{uuid.uuid4().hex[:10]}")
    key_id = key.split("_")[1]
    with session_scope(secured.resolved_database_url) as session:
        stored = session.get(ApiKey, key_id)
        assert stored is not None
        assert key.split("_", 2)[2] not in stored.secret_sha256
    assert secured_client.get("/datasets", headers=bearer(key)).status_code == 200
    # A key with the right id and a wrong secret is refused.
    assert secured_client.get("/datasets", headers=bearer(key[:-4] + "AAAA")).status_code == 401
    with session_scope(secured.resolved_database_url) as session:
        revoke_key(session=session, key_id=key_id)
    response = secured_client.get("/datasets", headers=bearer(key))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_another_tenants_ids_answer_404_on_every_route_and_lists_leave_them_out(
    secured: Settings, secured_client: TestClient
) -> None:
    owner, other = tenant_with_rows(secured), tenant_with_rows(secured)
    admin_key = new_key(secured, "operators", admin=True)
    # A public address: registering it sends nothing (no webhook sender runs in these tests).
    owner_webhook = secured_client.post(
        "/webhooks", json={"url": "https://8.8.8.8/hooks"}, headers=bearer(owner.key)
    )
    assert owner_webhook.status_code == 201, owner_webhook.text
    owner_upload = secured_client.post("/uploads", json={"size": 10}, headers=bearer(owner.key))
    assert owner_upload.status_code == 201, owner_upload.text
    ids = {
        "upload_id": owner_upload.json()["id"],
        "dataset_id": owner.dataset_id,
        "job_id": owner.job_id,
        "model_id": owner.model_id,
        "webhook_id": owner_webhook.json()["id"],
    }
    # Routes whose body, not path, names a row: each is sent the owner's ids.
    bodies = {
        ("post", "/jobs"): {"dataset_id": owner.dataset_id, "base_model": "tiny-clip"},
        ("post", "/predict"): {"model_id": owner.model_id, "images": [png_base64()]},
        ("post", "/embed"): {"model_id": owner.model_id, "texts": ["a photo"]},
    }
    list_routes = {("get", "/datasets"), ("get", "/jobs"), ("get", "/models"), ("get", "/webhooks")}
    # Creating a dataset names no existing row: it is the caller's own (tested elsewhere), and
    # /usage adds up only the caller's tenant's bytes (test_stored_quota: another tenant sees 0).
    # Registering a webhook, or starting an upload, is the caller's own too
    # (tests/webhooks/test_routes.py, tests/api/test_resumable_upload.py).
    own_rows_only = {
        ("post", "/datasets"),
        ("get", "/usage"),
        ("post", "/webhooks"),
        ("post", "/uploads"),
    }
    # Operators' routes: a tenant's key is refused outright.
    admin_only = {("get", "/metrics")}
    schema = secured_client.get("/openapi.json").json()
    walked = set()
    for path, operations in schema["paths"].items():
        if path == "/health":
            continue
        for method in operations:
            route = (method, path)
            walked.add(route)
            if route in own_rows_only:
                continue
            if route in admin_only:
                assert secured_client.get(path, headers=bearer(other.key)).status_code == 403
                continue
            if route in list_routes:
                for key, sees in ((other.key, False), (owner.key, True), (admin_key, True)):
                    listing = secured_client.get(path, params={"limit": 200}, headers=bearer(key))
                    assert listing.status_code == 200
                    listed = {item["id"] for item in listing.json()["items"]}
                    assert bool(listed & set(ids.values())) is sees, (path, sees)
                continue
            assert "{" in path or route in bodies, f"no tenant check covers {method} {path}"
            concrete = path.format(**ids)
            body = bodies.get(route)
            refused = secured_client.request(method, concrete, json=body, headers=bearer(other.key))
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["detail"].endswith("not found")
            if method == "get":
                for key in (owner.key, admin_key):
                    allowed = secured_client.get(concrete, headers=bearer(key))
                    assert allowed.status_code != 404, (path, allowed.text)
    assert walked >= set(bodies) | list_routes | own_rows_only | admin_only
    # The owner itself may start a job on its dataset and predict with its model.
    started = secured_client.post(
        "/jobs", json=bodies[("post", "/jobs")], headers=bearer(owner.key)
    )
    assert started.status_code == 201, started.text
    assert started.json()["id"] in {
        item["id"]
        for item in secured_client.get("/jobs", headers=bearer(owner.key)).json()["items"]
    }
    answer = secured_client.post(
        "/predict", json=bodies[("post", "/predict")], headers=bearer(owner.key)
    )
    assert answer.status_code == 200, answer.text


def test_a_dataset_uploaded_with_a_key_belongs_to_its_tenant(
    secured: Settings, secured_client: TestClient
) -> None:
    owner, other = tenant_with_rows(secured), tenant_with_rows(secured)
    response = secured_client.post(
        "/datasets",
        files={"file": ("shapes.zip", class_zip({"circle": 6, "square": 6}), "application/zip")},
        headers=bearer(owner.key),
    )
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    assert (
        secured_client.get(f"/datasets/{dataset_id}", headers=bearer(owner.key)).status_code == 200
    )
    assert (
        secured_client.get(f"/datasets/{dataset_id}", headers=bearer(other.key)).status_code == 404
    )
