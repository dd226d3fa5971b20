"""Calibrated `/predict`: a model's stored temperature, and abstaining below `min_confidence`."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core import storage
from app.core.config import Settings
from app.ml.model_metadata import read_metadata, write_metadata
from tests.api.jobs import create_job
from tests.api.predict_requests import encoded, post_json, post_multipart, shape_png
from tests.conftest import make_ready_dataset
from tests.model_factory import SHAPE_LABELS, register_model

TEMPERATURE = 2.0
# Far above what an untrained tiny-clip is ever sure of over three labels.
MODEL_MIN_CONFIDENCE = 0.99
IMAGES = [encoded(shape_png("red circle")), encoded(shape_png("blue triangle", seed=1))]


def calibrated_model(settings: Settings, name: str, **metadata: Any) -> str:
    """A tiny-clip model (the same weights as every other) whose `clipft.json` says more."""
    model_id = register_model(settings=settings, name=name)
    folder = storage.model_dir(settings.data_dir, model_id)
    write_metadata(folder, dataclasses.replace(read_metadata(folder), **metadata))
    return model_id


@pytest.fixture(scope="module")
def plain_id(settings: Settings) -> str:
    return register_model(settings=settings, name="uncalibrated")


@pytest.fixture(scope="module")
def calibrated_id(settings: Settings) -> str:
    return calibrated_model(settings, "calibrated", temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def cautious_id(settings: Settings) -> str:
    return calibrated_model(
        settings, "cautious", temperature=TEMPERATURE, min_confidence=MODEL_MIN_CONFIDENCE
    )


def by_label(ranking: list[dict[str, Any]]) -> dict[str, float]:
    return {entry["label"]: entry["score"] for entry in ranking}


def test_a_stored_temperature_divides_the_logits_before_the_softmax(
    client: TestClient, plain_id: str, calibrated_id: str
) -> None:
    plain = post_json(client, model_id=plain_id, images=IMAGES).json()
    response = post_json(client, model_id=calibrated_id, images=IMAGES)

    assert response.status_code == 200
    body = response.json()
    for plain_ranking, ranking in zip(plain["predictions"], body["predictions"], strict=True):
        # softmax(z / T) from softmax(z): log-probabilities are the logits up to a constant.
        scaled = {
            label: math.log(score) / TEMPERATURE for label, score in by_label(plain_ranking).items()
        }
        total = sum(math.exp(value) for value in scaled.values())
        expected = {label: math.exp(value) / total for label, value in scaled.items()}
        assert by_label(ranking) == pytest.approx(expected, abs=1e-5)
        # The same ranking, less sure of itself.
        assert [entry["label"] for entry in ranking] == [e["label"] for e in plain_ranking]
        assert ranking[0]["score"] < plain_ranking[0]["score"]
    # No threshold: every image gets its top label.
    assert body["min_confidence"] is None
    assert body["decisions"] == [
        {"label": ranking[0]["label"], "score": ranking[0]["score"], "reason": None}
        for ranking in body["predictions"]
    ]


def test_a_models_default_threshold_abstains_and_still_shows_the_top_k(
    client: TestClient, cautious_id: str
) -> None:
    response = post_json(client, model_id=cautious_id, images=IMAGES, top_k=2)

    assert response.status_code == 200
    body = response.json()
    assert body["min_confidence"] == MODEL_MIN_CONFIDENCE
    for decision, ranking in zip(body["decisions"], body["predictions"], strict=True):
        assert decision == {
            "label": None,
            "score": ranking[0]["score"],
            "reason": "below threshold",
        }
        assert len(ranking) == 2 and ranking[0]["label"] in SHAPE_LABELS

    # The request's threshold wins over the model's: 0 keeps every answer.
    body = post_json(client, model_id=cautious_id, images=IMAGES, min_confidence=0).json()
    assert body["min_confidence"] == 0
    assert [decision["label"] for decision in body["decisions"]] == [
        ranking[0]["label"] for ranking in body["predictions"]
    ]


def test_min_confidence_per_request_in_json_and_multipart(
    client: TestClient, plain_id: str
) -> None:
    body = post_json(client, model_id=plain_id, images=IMAGES, min_confidence=1.0).json()
    assert body["min_confidence"] == 1.0
    assert [decision["reason"] for decision in body["decisions"]] == ["below threshold"] * 2
    assert all(len(ranking) == len(SHAPE_LABELS) for ranking in body["predictions"])

    files = [("circle.png", shape_png("red circle"))]
    response = post_multipart(client, files, model_id=plain_id, min_confidence="0.999")
    assert response.status_code == 200
    assert response.json()["decisions"][0]["label"] is None

    # Just under the top probability: the image keeps its label.
    top = body["predictions"][0][0]
    threshold = top["score"] - 1e-3
    kept = post_json(client, model_id=plain_id, images=IMAGES[:1], min_confidence=threshold)
    (decision,) = kept.json()["decisions"]
    assert decision["label"] == top["label"] and decision["reason"] is None
    assert decision["score"] == pytest.approx(top["score"], abs=1e-5)


def test_an_ensemble_and_zero_shot_take_the_requests_threshold_only(
    client: TestClient, plain_id: str, cautious_id: str
) -> None:
    ensemble = post_json(client, model_ids=[plain_id, cautious_id], images=IMAGES).json()
    # Each model's default was chosen for that model alone, not for their average.
    assert ensemble["min_confidence"] is None
    assert all(decision["label"] is not None for decision in ensemble["decisions"])

    zero_shot = post_json(
        client, base_model="tiny-clip", labels=list(SHAPE_LABELS), images=IMAGES, min_confidence=1
    ).json()
    assert [decision["label"] for decision in zero_shot["decisions"]] == [None, None]
    assert len(zero_shot["predictions"][0]) == len(SHAPE_LABELS)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"min_confidence": 1.5}, "less than or equal to 1"),
        ({"min_confidence": -0.1}, "greater than or equal to 0"),
        ({"min_confidence": "x"}, "valid number"),
        ({"min_confidence": 0.5, "texts": ["a red circle"]}, "applies to classification"),
    ],
)
def test_a_bad_min_confidence_is_a_422_naming_it(
    client: TestClient, plain_id: str, body: dict[str, Any], message: str
) -> None:
    response = post_json(client, model_id=plain_id, images=IMAGES[:1], **body)

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == "min_confidence"
    assert message in error["msg"]


def test_a_bad_min_confidence_in_a_form_is_a_422(client: TestClient, plain_id: str) -> None:
    files = [("circle.png", shape_png())]
    response = post_multipart(client, files, model_id=plain_id, min_confidence="x")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "min_confidence"


def test_target_precision_is_a_checked_hyperparameter(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    for bad in (0, 1.5, "0.9"):
        response = client.post(
            "/jobs",
            json={
                "dataset_id": ready_dataset,
                "base_model": "tiny-clip",
                "hyperparameters": {"target_precision": bad},
            },
        )
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"][-1] == "target_precision"
    job = create_job(client, ready_dataset, hyperparameters={"target_precision": 0.95})
    assert job["hyperparameters"]["target_precision"] == 0.95

    captions = make_ready_dataset(settings, kind="captions", per_class=3)
    response = client.post(
        "/jobs",
        json={
            "dataset_id": captions,
            "base_model": "tiny-clip",
            "hyperparameters": {"target_precision": 0.95},
        },
    )
    assert response.status_code == 422
    assert "target_precision" in response.json()["detail"]


def test_a_downloaded_models_card_gives_its_temperature_and_threshold(
    client: TestClient, cautious_id: str
) -> None:
    response = client.get(f"/models/{cautious_id}/download")

    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        card = archive.read("README.md").decode()
        assert json.loads(archive.read("clipft.json"))["temperature"] == TEMPERATURE
    assert "| temperature | 2: divide the class logits by it" in card
    assert f"| min_confidence | {MODEL_MIN_CONFIDENCE:g}: below it, answer no label" in card
