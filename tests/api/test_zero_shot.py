"""Zero-shot `/predict` with a base model: no fine-tuning, the labels come with the request."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.ml.synthetic import make_images, png_bytes
from app.ml.tiny_clip import TINY_CLIP_SHAPES_NAME
from tests.api.zero_shot_requests import LABELS, encoded
from tests.datasets_helpers import grey_ramp_8_bit, grey_ramp_bytes


def test_a_base_model_classifies_over_the_requests_labels(client: TestClient) -> None:
    truth, images = encoded(5, seed=11)
    response = client.post(
        "/predict",
        json={"base_model": TINY_CLIP_SHAPES_NAME, "labels": LABELS, "images": images, "top_k": 2},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["base_model"] == TINY_CLIP_SHAPES_NAME
    rows = body["predictions"]
    assert len(rows) == len(images) and all(len(row) == 2 for row in rows)
    assert all(row[0]["score"] >= row[1]["score"] for row in rows)
    correct = sum(row[0]["label"] == label for row, label in zip(rows, truth, strict=True))
    # The built-in shapes model knows these classes: zero-shot gets most of them.
    assert correct / len(truth) >= 0.8

    # Other labels, other answers: the same weights, a head made for this request.
    other = client.post(
        "/predict",
        json={
            "base_model": TINY_CLIP_SHAPES_NAME,
            "labels": ["circle thing", "square thing"],
            "prompt_templates": ["a {}", "a photo of a {}."],
            "images": images[:2],
        },
    )
    assert other.status_code == 200, other.text
    assert {entry["label"] for entry in other.json()["predictions"][0]} == {
        "circle thing",
        "square thing",
    }


def test_a_base_model_compares_images_with_texts(client: TestClient) -> None:
    _, images = encoded(1, seed=3)
    texts = ["a red circle", "a blue triangle"]
    response = client.post(
        "/predict", json={"base_model": "tiny-clip", "texts": texts, "images": images}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["similarity"]) == len(images) and len(body["similarity"][0]) == 2
    assert all(abs(sum(row) - 1) < 1e-4 for row in body["probabilities"])


def test_zero_shot_requests_that_make_no_sense_are_422(client: TestClient) -> None:
    _, images = encoded(1, seed=1)
    cases = [
        ({"base_model": "tiny-clip", "images": images}, "labels to classify over or texts"),
        (
            {"base_model": "tiny-clip", "labels": ["a", "b"], "texts": ["x"], "images": images},
            "one of them",
        ),
        ({"model_id": "x", "labels": ["a", "b"], "images": images}, "labels go with base_model"),
        ({"base_model": "tiny-clip", "labels": ["a", "a"], "images": images}, "distinct"),
        (
            {
                "base_model": "tiny-clip",
                "labels": ["a", "b"],
                "prompt_templates": ["no slot"],
                "images": images,
            },
            "where the label goes",
        ),
        ({"base_model": "no such/model!", "labels": ["a", "b"], "images": images}, "base_model"),
        ({"base_model": "tiny-clip", "model_id": "x", "texts": ["t"], "images": images}, "one of"),
    ]
    for body, expected in cases:
        response = client.post("/predict", json=body)
        assert response.status_code == 422, (body, response.text)
        assert expected in response.text, (expected, response.text)


def test_zero_shot_takes_multipart_uploads_too(client: TestClient) -> None:
    samples = make_images(("red circle", "blue triangle"), per_class=1, seed=5)
    response = client.post(
        "/predict",
        data={"base_model": TINY_CLIP_SHAPES_NAME, "labels": ["red circle", "blue triangle"]},
        files=[
            ("files", (f"{index}.png", png_bytes(sample.image), "image/png"))
            for index, sample in enumerate(samples)
        ],
    )
    assert response.status_code == 200, response.text
    assert [row[0]["label"] for row in response.json()["predictions"]] == [
        "red circle",
        "blue triangle",
    ]


def test_zero_shot_refuses_a_hub_model_this_server_may_not_download(settings: Settings) -> None:
    closed = settings.model_copy(update={"allow_hub_downloads": False})
    _, images = encoded(1, seed=2)
    with TestClient(create_app(closed, run_reconciler=False)) as closed_client:
        response = closed_client.post(
            "/predict",
            json={
                "base_model": "openai/clip-vit-base-patch32",
                "labels": ["a", "b"],
                "images": images,
            },
        )
    assert response.status_code == 422
    assert "does not download from the hub" in response.json()["detail"]


def test_16_bit_and_float_images_are_seen_as_their_8_bit_copy(client: TestClient) -> None:
    deep = [grey_ramp_bytes("uint16", 65535, "PNG"), grey_ramp_bytes("float32", 1.0, "TIFF")]
    response = client.post(
        "/predict",
        json={
            "base_model": TINY_CLIP_SHAPES_NAME,
            "texts": ["a black square", "a white square", "a grey gradient"],
            "images": [
                base64.b64encode(payload).decode() for payload in [grey_ramp_8_bit(), *deep]
            ],
        },
    )
    assert response.status_code == 200, response.text
    eight_bit, *others = response.json()["similarity"]
    for similarity in others:
        assert similarity == pytest.approx(eight_bit, abs=1e-5)
