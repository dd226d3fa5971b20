"""/predict remembers the rows of the models it serves for a short while, and only that."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, event

from app.core.config import Settings
from app.core.db import get_engine, session_scope
from app.main import create_app
from app.orm import Model
from tests.api.predict_requests import png_base64
from tests.api.tenants import bearer, tenant_with_rows
from tests.model_factory import register_model

LOOKUP_SECONDS = 1.0


@pytest.fixture(scope="module")
def remembering(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "auth_disabled": False,
            "auth_cache_seconds": 0.0,
            "model_lookup_seconds": LOOKUP_SECONDS,
        }
    )


@pytest.fixture(scope="module")
def remembering_client(remembering: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(remembering, run_reconciler=False)) as test_client:
        yield test_client


@pytest.fixture
def model_reads(settings: Settings) -> Iterator[list[str]]:
    """Every SELECT of the model table, as the database receives it."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and "FROM model" in statement:
            statements.append(statement)

    engine = get_engine(settings.resolved_database_url, settings.database_pool)
    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)


def test_repeated_predictions_read_the_models_row_once(
    remembering: Settings, remembering_client: TestClient, model_reads: list[str]
) -> None:
    owner = tenant_with_rows(remembering)
    body = {"model_id": owner.model_id, "images": [png_base64()]}
    model_reads.clear()  # making the tenant's rows read the model table too
    for _ in range(5):
        response = remembering_client.post("/predict", json=body, headers=bearer(owner.key))
        assert response.status_code == 200, response.text
    assert len(model_reads) == 1


def test_a_remembered_model_stays_invisible_to_another_tenant(
    remembering: Settings, remembering_client: TestClient
) -> None:
    owner, stranger = tenant_with_rows(remembering), tenant_with_rows(remembering)
    body = {"model_id": owner.model_id, "images": [png_base64()]}
    assert remembering_client.post("/predict", json=body, headers=bearer(owner.key)).is_success
    refused = remembering_client.post("/predict", json=body, headers=bearer(stranger.key))
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"model {owner.model_id} not found"


def test_a_model_deleted_elsewhere_is_served_at_most_the_lookup_time_longer(
    remembering: Settings, remembering_client: TestClient
) -> None:
    owner = tenant_with_rows(remembering)
    body = {"model_id": owner.model_id, "images": [png_base64()]}
    assert remembering_client.post("/predict", json=body, headers=bearer(owner.key)).is_success
    # Another api process deletes it: this one's memory is all that still knows it, for as
    # long as CLIPFT_MODEL_LOOKUP_SECONDS says (its files are still loaded in the model cache).
    with session_scope(remembering.resolved_database_url) as session:
        session.execute(delete(Model).where(Model.id == owner.model_id))
    assert remembering_client.post("/predict", json=body, headers=bearer(owner.key)).is_success
    time.sleep(LOOKUP_SECONDS + 0.1)
    gone = remembering_client.post("/predict", json=body, headers=bearer(owner.key))
    assert gone.status_code == 404


def test_with_no_lookup_time_every_prediction_reads_the_row(
    settings: Settings, model_reads: list[str]
) -> None:
    fresh = settings.model_copy(update={"model_lookup_seconds": 0.0})
    model_id = register_model(settings=fresh)
    with TestClient(create_app(fresh, run_reconciler=False)) as client:
        body = {"model_id": model_id, "images": [png_base64()]}
        for _ in range(3):
            assert client.post("/predict", json=body).status_code == 200
    assert len(model_reads) == 3
