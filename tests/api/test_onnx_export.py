"""`GET /models/{id}/export?format=onnx`, checked with onnxruntime the way a user would run it:
the zip alone, PIL and numpy for the preprocessing, no clipft and no torch in the answer."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from transformers import AutoTokenizer

from app.core import storage
from app.core.config import Settings
from app.ml.synthetic import DEFAULT_CLASSES, make_images, photo_like
from tests.api.predict_requests import encoded, post_json
from tests.model_factory import register_model
from tests.training.runs import tiny_config
from tests.training.synthetic_folder import write_synthetic_folder
from worker.job_runner import TRAINING_ONLY_FILES
from worker.training.methods import METHODS
from worker.training.run import run

# The subject is the export and its graphs: the same on any database and broker.
pytestmark = pytest.mark.backend_independent

# /predict resizes with torchvision's antialiased bicubic, the test with Pillow's: a grey level
# apart at most: measured up to 1e-3 on these models and images.
PROBABILITY_TOLERANCE = 5e-3
# The same pixels through the graph and through torch.
EMBEDDING_TOLERANCE = 1e-4
LABELS = tuple(sorted(DEFAULT_CLASSES))  # a dataset's classes, as ingest orders them


@pytest.fixture(scope="module")
def method_models(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One model per training method, trained for an epoch and registered as the worker does."""
    dataset = tmp_path_factory.mktemp("onnx-dataset")
    write_synthetic_folder(dataset, per_class=8)
    models = {}
    for method in sorted(METHODS):
        out = tmp_path_factory.mktemp(f"onnx-{method}")
        epochs = 2 if method == "lp_ft" else 1  # lp_ft probes for an epoch, then tunes
        config = tiny_config(
            dataset, method=method, epochs=epochs, batch_size=16, prepare_workers=1
        )
        result = run(config, out)
        assert result.best_checkpoint is not None
        model_id = register_model(settings=settings, labels=LABELS, name=method, write_files=False)
        shutil.copytree(
            result.best_checkpoint,
            storage.model_dir(settings.data_dir, model_id),
            ignore=shutil.ignore_patterns(*TRAINING_ONLY_FILES),
        )
        models[method] = model_id
    return models


def sample_images() -> list[bytes]:
    shapes = [sample.image for sample in make_images(DEFAULT_CLASSES, per_class=2, seed=9)]
    pictures = [*shapes, photo_like(96, 64, seed=1), photo_like(50, 120, seed=2)]
    payloads = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        payloads.append(buffer.getvalue())
    return payloads


def preprocess(payload: bytes, description: dict[str, Any]) -> np.ndarray:
    """preprocess.json, followed with Pillow and numpy only."""
    image = Image.open(io.BytesIO(payload)).convert("RGB")
    edge = description["shortest_edge"]
    if edge is None:
        height, width = description["resize_to"]
    elif image.width <= image.height:
        width, height = edge, int(edge * image.height / image.width)
    else:
        height, width = edge, int(edge * image.width / image.height)
    resized = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    crop_height, crop_width = description["crop_size"]
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    square = resized[top : top + crop_height, left : left + crop_width]
    return np.ascontiguousarray(square.transpose(2, 0, 1))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def exported(client: TestClient, model_id: str, folder: Path) -> Path:
    response = client.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert f"clipft-model-{model_id}-onnx.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        archive.extractall(folder)
    assert {"image_encoder.onnx", "text_encoder.onnx", "classifier.json", "preprocess.json"} <= (
        names
    )
    assert any(name.startswith("tokenizer/") for name in names)
    return folder


@pytest.mark.parametrize("method", sorted(METHODS))
def test_onnxruntime_classifies_like_predict_for_every_method(
    method: str, method_models: dict[str, str], client: TestClient, tmp_path: Path
) -> None:
    model_id = method_models[method]
    folder = exported(client, model_id, tmp_path)
    description = json.loads((folder / "preprocess.json").read_text())
    classifier = json.loads((folder / "classifier.json").read_text())
    assert classifier["labels"] == list(LABELS)

    payloads = sample_images()
    pixels = np.stack([preprocess(payload, description) for payload in payloads])
    images = onnxruntime.InferenceSession(str(folder / "image_encoder.onnx"))
    (embeddings,) = images.run(None, {"pixels": pixels})
    assert embeddings.shape[0] == len(payloads)  # the batch is dynamic (traced with 2)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    weight, bias = np.asarray(classifier["weight"]), np.asarray(classifier["bias"])
    probabilities = softmax((embeddings @ weight.T + bias) / classifier["temperature"])

    response = post_json(
        client,
        model_id=model_id,
        images=[encoded(payload) for payload in payloads],
        top_k=len(LABELS),
    )
    assert response.status_code == 200, response.text
    for row, ranking in zip(probabilities, response.json()["predictions"], strict=True):
        served = {entry["label"]: entry["score"] for entry in ranking}
        ours = dict(zip(classifier["labels"], row.tolist(), strict=True))
        assert max(ours, key=ours.__getitem__) == ranking[0]["label"]
        assert ours == pytest.approx(served, abs=PROBABILITY_TOLERANCE)


def test_the_graphs_match_torch_on_the_same_inputs_at_any_batch_and_text_length(
    method_models: dict[str, str], client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    import torch

    from app.inference.cache import load_cached_model
    from app.ml.encode import encode_images, encode_texts
    from app.ml.preprocess import normalize, resize_and_crop

    model_id = method_models["lora"]  # merged weights: the graph is the plain CLIP's
    folder = exported(client, model_id, tmp_path)
    model = load_cached_model(
        model_id, storage.model_dir(settings.data_dir, model_id), torch.device("cpu"), "fp32"
    )
    clip = model.loaded_clip.clip
    images = [Image.open(io.BytesIO(payload)) for payload in sample_images()[:5]]
    pixels = torch.stack([resize_and_crop(image, model.pixel_spec) for image in images])
    with torch.inference_mode():
        expected_images = encode_images(clip, normalize(pixels, model.pixel_spec)).numpy()
    session = onnxruntime.InferenceSession(str(folder / "image_encoder.onnx"))
    (got,) = session.run(None, {"pixels": pixels.numpy()})
    assert np.abs(got - expected_images).max() < EMBEDDING_TOLERANCE

    texts = ["a red circle", "a photo of a small green square on a plain background", "x"]
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    text_session = onnxruntime.InferenceSession(str(folder / "text_encoder.onnx"))
    (got_texts,) = text_session.run(
        None,
        {
            "input_ids": tokens["input_ids"].astype(np.int64),
            "attention_mask": tokens["attention_mask"].astype(np.int64),
        },
    )
    with torch.inference_mode():
        expected_texts = encode_texts(clip, model.loaded_clip.tokenizer, texts, torch.device("cpu"))
    assert np.abs(got_texts - expected_texts.numpy()).max() < EMBEDDING_TOLERANCE


def test_the_export_is_built_once_and_removed_with_its_model(
    settings: Settings, client: TestClient
) -> None:
    model_id = register_model(settings=settings, name="exported once", weights_seed=4)
    first = client.get(f"/models/{model_id}/export?format=onnx")
    kept = list(storage.exports_dir(settings.data_dir, model_id).glob("onnx-*.zip"))
    assert len(kept) == 1
    built_at = kept[0].stat().st_mtime_ns
    second = client.get(f"/models/{model_id}/export?format=onnx")
    assert second.content == first.content
    assert kept[0].stat().st_mtime_ns == built_at

    assert client.delete(f"/models/{model_id}").status_code == 204
    assert not storage.exports_dir(settings.data_dir, model_id).exists()
    assert client.get(f"/models/{model_id}/export?format=onnx").status_code == 404


def test_a_bad_format_or_a_model_without_files_is_a_4xx_that_says_so(
    settings: Settings, client: TestClient
) -> None:
    model_id = register_model(settings=settings, name="no files", write_files=False)
    unknown = client.get(f"/models/{model_id}/export?format=tflite")
    assert unknown.status_code == 422
    assert "onnx" in unknown.text
    assert client.get(f"/models/{model_id}/export").status_code == 422
    gone = client.get(f"/models/{model_id}/export?format=onnx")
    assert gone.status_code == 409
    assert "no files" in gone.json()["detail"]


def test_a_captions_model_exports_both_towers_and_no_classifier(
    settings: Settings, client: TestClient, tmp_path: Path
) -> None:
    model_id = register_model(settings=settings, kind="captions", name="captions")
    response = client.get(f"/models/{model_id}/export", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"image_encoder.onnx", "text_encoder.onnx", "preprocess.json"} <= names
    assert "classifier.json" not in names
    assert "no labels" in readme
