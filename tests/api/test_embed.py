"""`POST /embed`: unit vectors for images and texts, in one space, from a model or a base model."""

from __future__ import annotations

import base64

import torch
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.ml.synthetic import make_images, png_bytes
from tests.model_factory import register_model


def images(count: int) -> list[str]:
    samples = make_images(("red circle", "blue triangle"), per_class=count, seed=8)
    return [base64.b64encode(png_bytes(sample.image)).decode() for sample in samples]


def test_images_and_texts_become_unit_vectors_that_match_predicts_similarity(
    client: TestClient, settings: Settings
) -> None:
    model_id = register_model(settings=settings)
    pictures, texts = images(1), ["a red circle", "a blue triangle", "a green square"]
    response = client.post(
        "/embed", json={"model_id": model_id, "images": pictures, "texts": texts}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    image_vectors = torch.tensor(body["image_embeddings"])
    text_vectors = torch.tensor(body["text_embeddings"])
    assert image_vectors.shape == (2, body["dimension"])
    assert text_vectors.shape == (3, body["dimension"])
    assert torch.allclose(image_vectors.norm(dim=1), torch.ones(2), atol=1e-4)
    # The same space /predict compares in: their dot products are its cosine similarities.
    predicted = client.post(
        "/predict", json={"model_id": model_id, "images": pictures, "texts": texts}
    ).json()
    assert torch.allclose(
        image_vectors @ text_vectors.T, torch.tensor(predicted["similarity"]), atol=1e-3
    )


def test_a_base_model_embeds_texts_alone(client: TestClient) -> None:
    response = client.post("/embed", json={"base_model": "tiny-clip", "texts": ["a cat"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["base_model"] == "tiny-clip" and body["image_embeddings"] == []
    assert len(body["text_embeddings"]) == 1


def test_embed_requests_that_make_no_sense_are_refused(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/embed", json={"base_model": "tiny-clip"}).status_code == 422
    both = client.post("/embed", json={"base_model": "tiny-clip", "model_id": "x", "texts": ["a"]})
    assert both.status_code == 422
    assert client.post("/embed", json={"model_id": "nope", "texts": ["a"]}).status_code == 404
    empty = client.post("/embed", json={"base_model": "tiny-clip", "texts": [" "]})
    assert empty.status_code == 422 and "texts[0] is empty" in empty.text
    too_many = client.post(
        "/embed",
        json={"base_model": "tiny-clip", "texts": ["a"] * (settings.predict_max_texts + 1)},
    )
    assert too_many.status_code == 413
