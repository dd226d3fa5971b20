"""`GET /models/{id}/download`: the model folder as a zip that loads, with a model card."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient
from transformers import CLIPModel

from app.core.config import Settings
from app.core.storage import model_dir
from tests.model_factory import register_model


def test_a_downloaded_model_loads_and_its_card_says_what_it_is(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    model_id = register_model(settings=settings, name="shapes v1")
    response = client.get(f"/models/{model_id}/download")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"clipft-model-{model_id}.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        assert {"README.md", "clipft.json", "config.json", "model.safetensors"} <= names
        folder = model_dir(settings.data_dir, model_id)
        assert archive.read("model.safetensors") == (folder / "model.safetensors").read_bytes()
        archive.extractall(tmp_path / "exported")
    card = (tmp_path / "exported" / "README.md").read_text()
    assert card.startswith("# shapes v1")
    assert "| base model | `tiny-clip` |" in card
    assert "| val_accuracy | 0.5 |" in card
    assert "red circle" in card
    loaded = CLIPModel.from_pretrained(tmp_path / "exported")
    assert loaded.config.vision_config.image_size == 32


def test_a_model_whose_files_are_gone_answers_409(client: TestClient, settings: Settings) -> None:
    model_id = register_model(settings=settings)
    for path in model_dir(settings.data_dir, model_id).iterdir():
        path.unlink()
    response = client.get(f"/models/{model_id}/download")
    assert response.status_code == 409
    assert "no files" in response.json()["detail"]
    assert client.get("/models/not-a-model/download").status_code == 404
