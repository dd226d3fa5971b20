"""`GET /models` and `GET /models/{id}`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.orm.base import utcnow
from tests.model_factory import PROMPT_TEMPLATE, SHAPE_LABELS, register_model


def _all_models(client: TestClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = client.get("/models", params={"limit": 200, "offset": len(items)}).json()
        items += page["items"]
        if not page["items"] or len(items) >= page["total"]:
            return items


def test_a_model_shows_its_fields(client: TestClient, settings: Settings) -> None:
    model_id = register_model(settings=settings, name="shapes")

    response = client.get(f"/models/{model_id}")

    assert response.status_code == 200
    body = response.json()
    job_id = body.pop("job_id")
    created_at = datetime.fromisoformat(body.pop("created_at"))
    assert body == {
        "id": model_id,
        "name": "shapes",
        "base_model": "tiny-clip",
        "kind": "classification",
        "labels": list(SHAPE_LABELS),
        "prompt_template": PROMPT_TEMPLATE,
        "metrics": {"val_accuracy": 0.5},
    }
    assert isinstance(job_id, str) and job_id
    assert created_at.utcoffset() == timedelta(0)


def test_an_unknown_model_is_404(client: TestClient) -> None:
    response = client.get("/models/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "model nope not found"}


def test_models_are_listed_newest_first(client: TestClient, settings: Settings) -> None:
    start = utcnow()
    # Registered out of time order, so the list has to sort rather than echo insertion order.
    middle = register_model(settings=settings, created_at=start + timedelta(seconds=1))
    oldest = register_model(settings=settings, created_at=start)
    newest = register_model(settings=settings, created_at=start + timedelta(seconds=2))

    listed = _all_models(client)

    ids = [item["id"] for item in listed]
    assert ids.index(newest) < ids.index(middle) < ids.index(oldest)
    created = [item["created_at"] for item in listed]
    assert [datetime.fromisoformat(value) for value in created] == sorted(
        (datetime.fromisoformat(value) for value in created), reverse=True
    )
    assert client.get("/models").json()["total"] == len(listed)


def test_limit_and_offset_page_through_the_list(client: TestClient, settings: Settings) -> None:
    for _ in range(3):
        register_model(settings=settings)
    listed = _all_models(client)

    page = client.get("/models", params={"limit": 2, "offset": 1}).json()

    assert page["items"] == listed[1:3]
    assert page["total"] == len(listed)


def test_the_default_page_holds_at_most_fifty(client: TestClient) -> None:
    body = client.get("/models").json()

    assert len(body["items"]) == min(50, body["total"])


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 201}, {"offset": -1}, {"limit": "many"}]
)
def test_out_of_range_paging_is_422(client: TestClient, params: dict[str, Any]) -> None:
    response = client.get("/models", params=params)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]
