"""A model that lives only in an object store that does not answer: 503, never a 500."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.api.predict_requests import encoded, shape_png
from tests.model_factory import register_model
from tests.object_store import unreachable_bucket


def test_an_unreachable_store_answers_503_with_retry_after(
    settings: Settings, tmp_path: Path
) -> None:
    # A model registered on another machine: its row here, its files only in the bucket.
    model_id = register_model(settings=settings, write_files=False)
    elsewhere = unreachable_bucket(settings, tmp_path / "this-host")
    with TestClient(create_app(elsewhere, run_reconciler=False)) as api:
        response = api.post(
            "/predict", json={"model_id": model_id, "images": [encoded(shape_png())]}
        )
        download = api.get(f"/models/{model_id}/download")
        export = api.get(f"/models/{model_id}/export", params={"format": "onnx"})
    for answer in (response, download, export):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.json() == {"detail": "the object store is unavailable; try again shortly"}
