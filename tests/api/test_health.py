from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.object_store import unreachable_bucket


def test_health_reports_ok_when_database_and_broker_answer(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    # No worker listens on the test queue: the api is healthy all the same, and says so.
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "object_store": "ok",
        "worker": "no worker seen in the last 30s",
    }


@pytest.mark.faults
def test_health_is_503_when_the_broker_is_down(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broken)) as test_client:
        response = test_client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("error")
    assert body["worker"] == "unknown"


@pytest.mark.faults
def test_health_is_503_when_the_object_store_does_not_answer(
    settings: Settings, tmp_path: Path
) -> None:
    away = unreachable_bucket(settings, tmp_path / "host")
    with TestClient(create_app(away, run_reconciler=False)) as test_client:
        response = test_client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert (body["database"], body["broker"]) == ("ok", "ok")
    assert body["object_store"] == "error: StoreUnavailable"
