"""`/webhooks`: registered per tenant with a secret shown once, bad and private URLs refused,
another tenant's webhooks never seen; a job's own webhook given on `POST /jobs`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.api.jobs import create_job
from tests.api.tenants import bearer, new_key
from tests.conftest import make_ready_dataset

ALL_EVENTS = ["job.succeeded", "job.failed", "job.cancelled", "dataset.ready", "dataset.failed"]


@pytest.fixture(scope="module")
def dataset_id(hook_settings: Settings) -> str:
    return make_ready_dataset(hook_settings, per_class=4)


@pytest.fixture(scope="module")
def guarded_client(hook_settings: Settings) -> Iterator[TestClient]:
    """The api as an operator runs it: private addresses refused."""
    guarded = hook_settings.model_copy(update={"webhook_allow_private": False})
    with TestClient(create_app(guarded, run_reconciler=False)) as test_client:
        yield test_client


def test_a_webhook_is_registered_listed_read_and_deleted_its_secret_shown_once(
    hook_client: TestClient,
) -> None:
    created = hook_client.post(
        "/webhooks", json={"url": "http://127.0.0.1:9/hooks", "description": "pipeline"}
    )
    assert created.status_code == 201, created.text
    webhook = created.json()
    assert webhook["events"] == ALL_EVENTS and webhook["job_id"] is None
    assert webhook["secret"].startswith("whsec_") and len(webhook["secret"]) > 40
    public = {name: value for name, value in webhook.items() if name != "secret"}
    assert hook_client.get(f"/webhooks/{webhook['id']}").json() == public
    listing = hook_client.get("/webhooks").json()
    assert listing["total"] == 1 and listing["items"] == [public]
    assert hook_client.get(f"/webhooks/{webhook['id']}/deliveries").json() == {
        "items": [],
        "total": 0,
    }
    assert hook_client.delete(f"/webhooks/{webhook['id']}").status_code == 204
    assert hook_client.get(f"/webhooks/{webhook['id']}").status_code == 404
    assert hook_client.get(f"/webhooks/{webhook['id']}/deliveries").status_code == 404
    assert hook_client.delete(f"/webhooks/{webhook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"url": "ftp://example.com/hooks"}, "http:// or https://"),
        ({"url": "example.com/hooks"}, "http:// or https://"),
        ({"url": "http:///hooks"}, "names no host"),
        ({"url": "https://user:pw@8.8.8.8/hooks"}, "credentials"),
        ({"url": "http://8.8.8.8:99999/hooks"}, "port"),
        ({"url": "http://8.8.8.8/a b"}, "spaces"),
        ({"url": "https://no-such-host.invalid/hooks"}, "does not resolve"),
        ({"url": "https://8.8.8.8/hooks", "events": ["job.started"]}, "events"),
        ({"url": "https://8.8.8.8/hooks", "events": []}, "events"),
        ({"url": "https://8.8.8.8/hooks", "secret": "mine"}, "secret"),
        ({"events": ["job.failed"]}, "url"),
    ],
)
def test_bad_input_answers_422_naming_the_problem(
    guarded_client: TestClient, body: dict[str, object], detail: str
) -> None:
    response = guarded_client.post("/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert detail in str(response.json()["detail"])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8000/hooks", "loopback"),
        ("http://127.8.9.10/hooks", "loopback"),
        ("http://localhost:8000/hooks", "loopback"),
        ("http://[::1]/hooks", "loopback"),
        ("http://[::ffff:127.0.0.1]/hooks", "loopback"),
        ("http://10.1.2.3/hooks", "private"),
        ("https://192.168.0.10/hooks", "private"),
        ("http://172.16.5.4/hooks", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/hooks", "not a unicast"),
    ],
)
def test_private_addresses_are_refused_unless_the_operator_allows_them(
    guarded_client: TestClient, hook_client: TestClient, dataset_id: str, url: str, reason: str
) -> None:
    refused = guarded_client.post("/webhooks", json={"url": url})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert reason in detail and "CLIPFT_WEBHOOK_ALLOW_PRIVATE" in detail
    # A job's own webhook is checked the same way, and the job is not made.
    before = guarded_client.get("/jobs").json()["total"]
    job = guarded_client.post(
        "/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip", "webhook_url": url}
    )
    assert job.status_code == 422 and job.json()["detail"].startswith("webhook_url: ")
    assert guarded_client.get("/jobs").json()["total"] == before
    assert hook_client.post("/webhooks", json={"url": url}).status_code == 201


def test_one_tenant_never_sees_anothers_webhooks(hook_settings: Settings) -> None:
    secured = hook_settings.model_copy(update={"auth_disabled": False, "auth_cache_seconds": 0})
    owner, other = new_key(secured, "hook-owner"), new_key(secured, "hook-other")
    with TestClient(create_app(secured, run_reconciler=False)) as client:
        made = client.post("/webhooks", json={"url": "http://127.0.0.1:9/"}, headers=bearer(owner))
        assert made.status_code == 201
        webhook_id = made.json()["id"]
        for method, path in (
            ("get", f"/webhooks/{webhook_id}"),
            ("get", f"/webhooks/{webhook_id}/deliveries"),
            ("delete", f"/webhooks/{webhook_id}"),
        ):
            refused = client.request(method, path, headers=bearer(other))
            assert refused.status_code == 404
            assert refused.json() == {"detail": f"webhook {webhook_id} not found"}
        assert client.get("/webhooks", headers=bearer(other)).json() == {"items": [], "total": 0}
        mine = client.get("/webhooks", headers=bearer(owner)).json()
        assert [item["id"] for item in mine["items"]] == [webhook_id]
        assert client.get(f"/webhooks/{webhook_id}", headers=bearer(owner)).status_code == 200
        assert client.get("/webhooks").status_code == 401


def test_a_tenant_registers_at_most_its_limit(hook_settings: Settings) -> None:
    limited = hook_settings.model_copy(update={"webhook_max_per_tenant": 2})
    with TestClient(create_app(limited, run_reconciler=False)) as client:
        for _ in range(2):
            assert client.post("/webhooks", json={"url": "http://127.0.0.1:9/"}).status_code == 201
        refused = client.post("/webhooks", json={"url": "http://127.0.0.1:9/"})
        assert refused.status_code == 409 and "delete one first" in refused.json()["detail"]


def test_a_job_given_a_webhook_answers_with_its_secret_and_otherwise_as_before(
    hook_client: TestClient, dataset_id: str
) -> None:
    plain = create_job(hook_client, dataset_id)
    assert "webhook" not in plain
    assert hook_client.get(f"/jobs/{plain['id']}").json() == plain
    with_hook = create_job(
        hook_client,
        dataset_id,
        webhook_url="http://127.0.0.1:9/job",
        webhook_events=["job.succeeded", "job.failed"],
    )
    webhook = with_hook.pop("webhook")
    assert hook_client.get(f"/jobs/{with_hook['id']}").json() == with_hook
    assert webhook["job_id"] == with_hook["id"] and webhook["secret"].startswith("whsec_")
    assert webhook["events"] == ["job.succeeded", "job.failed"]
    listed = hook_client.get(f"/webhooks/{webhook['id']}").json()
    assert listed["url"] == "http://127.0.0.1:9/job" and "secret" not in listed
    # It goes with its job.
    assert hook_client.post(f"/jobs/{with_hook['id']}/cancel").status_code == 200
    assert hook_client.delete(f"/jobs/{with_hook['id']}").status_code == 204
    assert hook_client.get(f"/webhooks/{webhook['id']}").status_code == 404


@pytest.mark.parametrize(
    ("extra", "detail"),
    [
        ({"webhook_events": ["job.failed"]}, "webhook_events needs webhook_url"),
        (
            {"webhook_url": "http://127.0.0.1:9/", "webhook_events": ["dataset.ready"]},
            "only job events",
        ),
        ({"webhook_url": "gopher://127.0.0.1/"}, "webhook_url: the URL must start with"),
    ],
)
def test_bad_job_webhooks_answer_422(
    hook_client: TestClient, dataset_id: str, extra: dict[str, object], detail: str
) -> None:
    response = hook_client.post(
        "/jobs", json={"dataset_id": dataset_id, "base_model": "tiny-clip", **extra}
    )
    assert response.status_code == 422, response.text
    assert detail in str(response.json()["detail"])
