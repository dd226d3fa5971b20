"""`POST /predict` with `model_ids`: an ensemble averages its models' probabilities (soft voting).

Each answer is checked against the single-model answers averaged here by hand.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core import storage
from app.core.config import Settings
from app.inference.cache import CachedModel
from app.inference.pixels import PixelPool
from tests.api.predict_requests import (
    TEXTS,
    assert_same_answer,
    encoded,
    post_json,
    post_multipart,
    shape_png,
    wait_until,
)
from tests.model_factory import SHAPE_LABELS, register_model

# Serving runs under bf16 autocast on a CPU with AVX512-BF16 (app/ml/precision.py), as on the
# 2-core EPYC these tests were written on; there the ensemble and the hand-averaged singles
# differed by at most 3.5e-8, while the models' own probabilities differ by up to 0.3.
TOLERANCE = 1e-6

IMAGES = [shape_png(label, seed) for seed, label in enumerate(SHAPE_LABELS * 2)]


@pytest.fixture(scope="module")
def ensemble_ids(settings: Settings) -> list[str]:
    """Three classifiers that answer differently over the same labels: the second lists them in
    another order, the third resizes images differently before the crop."""
    return [
        register_model(settings=settings, weights_seed=1, name="shapes one"),
        register_model(
            settings=settings,
            weights_seed=2,
            labels=tuple(reversed(SHAPE_LABELS)),
            name="shapes two",
        ),
        register_model(settings=settings, weights_seed=3, shortest_edge=48, name="shapes three"),
    ]


@pytest.fixture(scope="module")
def captions_model_id(settings: Settings) -> str:
    return register_model(settings=settings, kind="captions", weights_seed=4, name="captions")


def by_label(ranking: list[dict[str, Any]]) -> dict[str, float]:
    return {entry["label"]: entry["score"] for entry in ranking}


def hand_averaged_probabilities(client: TestClient, model_ids: list[str]) -> list[dict[str, float]]:
    """Per image, each label's probability averaged over the models, each asked alone."""
    images = [encoded(payload) for payload in IMAGES]
    singles = []
    for model_id in model_ids:
        response = post_json(client, model_id=model_id, images=images, top_k=len(SHAPE_LABELS))
        assert response.status_code == 200
        singles.append([by_label(ranking) for ranking in response.json()["predictions"]])
    return [
        {label: sum(single[image][label] for single in singles) / len(singles) for label in labels}
        for image, labels in enumerate(singles[0])
    ]


def assert_close(actual: list[list[float]], expected: list[list[float]]) -> None:
    assert len(actual) == len(expected)
    for actual_row, expected_row in zip(actual, expected, strict=True):
        assert actual_row == pytest.approx(expected_row, abs=TOLERANCE)


# Answers.


def test_an_ensemble_answers_the_mean_of_its_models_probabilities(
    client: TestClient, ensemble_ids: list[str]
) -> None:
    expected = hand_averaged_probabilities(client, ensemble_ids)

    response = post_json(
        client, model_ids=ensemble_ids, images=[encoded(payload) for payload in IMAGES]
    )

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"model_ids", "predictions", "decisions", "min_confidence"}
    assert body["model_ids"] == ensemble_ids
    assert len(body["predictions"]) == len(IMAGES)
    for ranking, averaged in zip(body["predictions"], expected, strict=True):
        # The default top_k of 5 is capped at the 3 labels.
        assert by_label(ranking) == pytest.approx(averaged, abs=TOLERANCE)
        assert sum(by_label(ranking).values()) == pytest.approx(1.0, abs=1e-5)


def test_the_answer_differs_from_every_single_model(
    client: TestClient, ensemble_ids: list[str]
) -> None:
    # Guards the test above: were the models alike, any one of them would pass for the mean.
    images = [encoded(payload) for payload in IMAGES]
    ensemble = post_json(client, model_ids=ensemble_ids, images=images).json()["predictions"]

    for model_id in ensemble_ids:
        single = post_json(client, model_id=model_id, images=images).json()["predictions"]
        largest_gap = max(
            abs(by_label(one)[label] - by_label(mean)[label])
            for one, mean in zip(single, ensemble, strict=True)
            for label in SHAPE_LABELS
        )
        assert largest_gap > 1000 * TOLERANCE


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_ranks_the_averaged_probabilities_best_first(
    client: TestClient, ensemble_ids: list[str], top_k: int
) -> None:
    expected = hand_averaged_probabilities(client, ensemble_ids)

    response = post_json(
        client,
        model_ids=ensemble_ids,
        images=[encoded(payload) for payload in IMAGES],
        top_k=top_k,
    )

    assert response.status_code == 200
    for ranking, averaged in zip(response.json()["predictions"], expected, strict=True):
        best_first = sorted(averaged, key=averaged.__getitem__, reverse=True)
        assert [entry["label"] for entry in ranking] == best_first[:top_k]
        scores = [entry["score"] for entry in ranking]
        assert scores == pytest.approx([averaged[label] for label in best_first[:top_k]], abs=1e-6)


def test_with_texts_an_ensemble_averages_softmax_and_cosine(
    client: TestClient, ensemble_ids: list[str], captions_model_id: str
) -> None:
    # Texts need no labels: a captions model may join.
    model_ids = [*ensemble_ids, captions_model_id]
    images = [encoded(payload) for payload in IMAGES]
    singles = [
        post_json(client, model_id=model_id, images=images, texts=TEXTS) for model_id in model_ids
    ]

    response = post_json(client, model_ids=model_ids, images=images, texts=TEXTS)

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"model_ids", "similarity", "probabilities"}
    assert body["model_ids"] == model_ids
    for key in ("similarity", "probabilities"):
        per_model = [single.json()[key] for single in singles]
        mean = [
            [sum(values) / len(model_ids) for values in zip(*rows, strict=True)]
            for rows in zip(*per_model, strict=True)
        ]
        assert_close(body[key], mean)
    assert [sum(row) for row in body["probabilities"]] == pytest.approx([1.0] * len(IMAGES))


@pytest.mark.parametrize("as_json_array", [False, True])
def test_multipart_ensembles_match_json(
    client: TestClient, ensemble_ids: list[str], as_json_array: bool
) -> None:
    files = [(f"{index}.png", payload) for index, payload in enumerate(IMAGES[:2])]
    model_ids: Any = ensemble_ids
    if as_json_array:
        model_ids = "[" + ", ".join(f'"{model_id}"' for model_id in ensemble_ids) + "]"

    from_form = post_multipart(client, files, model_ids=model_ids, top_k="2")
    from_json = post_json(
        client, model_ids=ensemble_ids, images=[encoded(p) for _, p in files], top_k=2
    )

    assert from_form.status_code == 200
    assert from_form.json()["model_ids"] == ensemble_ids
    assert_close(
        [[entry["score"] for entry in row] for row in from_form.json()["predictions"]],
        [[entry["score"] for entry in row] for row in from_json.json()["predictions"]],
    )


def test_multipart_ensembles_compare_with_texts(
    client: TestClient, ensemble_ids: list[str]
) -> None:
    from_form = post_multipart(
        client, [("a.png", IMAGES[0])], model_ids=ensemble_ids[:2], texts=TEXTS
    )
    from_json = post_json(
        client, model_ids=ensemble_ids[:2], images=[encoded(IMAGES[0])], texts=TEXTS
    )

    assert from_form.status_code == 200
    assert from_form.json()["model_ids"] == ensemble_ids[:2]
    assert_close(from_form.json()["similarity"], from_json.json()["similarity"])


def test_images_are_decoded_once_per_image_processor(
    client: TestClient, ensemble_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pixel_pool: PixelPool = client.app.state.pixel_pool  # type: ignore[attr-defined]
    decoded_for = []
    decode = pixel_pool.batch

    def counting_batch(*args: Any, **kwargs: Any) -> Any:
        decoded_for.append(kwargs["spec"].shortest_edge)
        return decode(*args, **kwargs)

    monkeypatch.setattr(pixel_pool, "batch", counting_batch)
    images = [encoded(IMAGES[0])]

    # The first two models share a processor; the third resizes to 48 before its crop.
    assert post_json(client, model_ids=ensemble_ids[:2], images=images).status_code == 200
    assert decoded_for == [32]
    assert post_json(client, model_ids=ensemble_ids, images=images).status_code == 200
    assert decoded_for == [32, 32, 48]


def test_ensemble_requests_share_forward_passes_with_single_model_requests(
    client: TestClient, settings: Settings, ensemble_ids: list[str]
) -> None:
    first_id = ensemble_ids[0]
    images = [encoded(IMAGES[0])]
    bodies = [
        {"model_ids": ensemble_ids[:2], "images": images},
        {"model_id": first_id, "images": images},
    ]
    alone = [post_json(client, **body).json() for body in bodies]
    first = _cached(client, settings, first_id)
    responses: list[httpx.Response | None] = [None, None]

    def send(index: int) -> None:
        responses[index] = client.post("/predict", json=bodies[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(2)]
    before = first.requests.forward_passes
    with first.lock:
        for thread in threads:
            thread.start()
        queued = wait_until(lambda: first.requests.pending_count() == 2)
    for thread in threads:
        thread.join(timeout=60)

    assert queued
    assert first.requests.forward_passes - before == 1
    for response, expected in zip(responses, alone, strict=True):
        assert response is not None and response.status_code == 200
        assert_same_answer(response.json(), expected)


def _cached(client: TestClient, settings: Settings, model_id: str) -> CachedModel:
    model_cache = client.app.state.model_cache  # type: ignore[attr-defined]
    cached: CachedModel = model_cache.get(model_id, storage.model_dir(settings.data_dir, model_id))
    return cached


# Errors.


def test_models_with_different_labels_are_422_naming_both(
    client: TestClient, settings: Settings, ensemble_ids: list[str]
) -> None:
    other_id = register_model(
        settings=settings, labels=("red circle", "green square", "yellow star"), name="stars"
    )

    response = post_json(client, model_ids=[ensemble_ids[0], other_id], images=[encoded(IMAGES[0])])

    assert response.status_code == 422
    assert response.json() == {
        "detail": "the models of an ensemble must have the same labels (in any order): "
        f"compared with model {ensemble_ids[0]}, model {other_id} lacks 'blue triangle' and "
        "adds 'yellow star'"
    }


def test_a_captions_model_in_a_classifying_ensemble_is_422(
    client: TestClient, ensemble_ids: list[str], captions_model_id: str
) -> None:
    response = post_json(
        client, model_ids=[ensemble_ids[0], captions_model_id], images=[encoded(IMAGES[0])]
    )

    assert response.status_code == 422
    assert response.json() == {
        "detail": "models with no labels to classify over cannot join an ensemble: "
        f"{captions_model_id} (captions); leave them out, or send `texts` to compare the "
        "images with"
    }


@pytest.mark.parametrize(
    ("fields", "location", "message"),
    [
        ({}, "model_id", "Field required: send model_id, model_ids for an ensemble, or base_model"),
        (
            {"model_id": "a", "model_ids": ["b", "c"]},
            "model_ids",
            "send one of model_id (one model), model_ids (an ensemble) or base_model (zero-shot)",
        ),
        (
            {"model_ids": ["a"]},
            "model_ids",
            "an ensemble needs at least 2 models, got 1: send model_id for one model",
        ),
        (
            {"model_ids": [f"m{index}" for index in range(9)]},
            "model_ids",
            "at most 8 models in an ensemble, got 9",
        ),
        (
            {"model_ids": ["a", "b", "a"]},
            "model_ids",
            "model_ids must be distinct: a named more than once",
        ),
    ],
)
def test_one_model_or_an_ensemble_of_distinct_models_else_422(
    client: TestClient, fields: dict[str, Any], location: str, message: str
) -> None:
    from_json = post_json(client, images=[encoded(IMAGES[0])], **fields)
    from_form = post_multipart(client, [("a.png", IMAGES[0])], **fields)

    for response in (from_json, from_form):
        assert response.status_code == 422
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", location]
        assert error["msg"] == message


def test_unknown_ids_in_an_ensemble_are_404_naming_them(
    client: TestClient, ensemble_ids: list[str]
) -> None:
    images = [encoded(IMAGES[0])]

    one = post_json(client, model_ids=[ensemble_ids[0], "nope"], images=images)
    two = post_json(client, model_ids=["nope", ensemble_ids[0], "gone"], images=images)

    assert one.status_code == 404
    assert one.json() == {"detail": "model nope not found"}
    assert two.status_code == 404
    assert two.json() == {"detail": "models nope, gone not found"}


def test_a_model_without_its_folder_in_an_ensemble_is_409(
    client: TestClient, settings: Settings, ensemble_ids: list[str]
) -> None:
    missing_id = register_model(settings=settings, write_files=False)

    response = post_json(
        client, model_ids=[ensemble_ids[0], missing_id], images=[encoded(IMAGES[0])]
    )

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"model {missing_id} cannot be served: its model folder is missing "
        f"(models/{missing_id})"
    }


def test_a_corrupt_image_in_an_ensemble_is_422_naming_it(
    client: TestClient, ensemble_ids: list[str]
) -> None:
    images = [encoded(IMAGES[0]), encoded(IMAGES[1][:100])]

    response = post_json(client, model_ids=ensemble_ids, images=images)

    assert response.status_code == 422
    assert response.json()["detail"].startswith("images[1]: corrupt image")


def test_openapi_documents_model_ids_for_json_and_multipart(client: TestClient) -> None:
    content = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"][
        "content"
    ]

    for media_type in ("application/json", "multipart/form-data"):
        properties = content[media_type]["schema"]["properties"]
        assert {"model_id", "model_ids"} <= set(properties)
