"""`POST /predict`: classification and image-text similarity, over JSON and multipart."""

from __future__ import annotations

import io
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core import storage
from app.core.config import Settings
from app.core.db import get_engine
from app.inference.cache import CachedModel, ModelCache
from app.main import create_app
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


def noise_png(side: int = 64) -> bytes:
    # Random pixels do not compress: a small picture that is large in bytes.
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier_id(settings: Settings) -> str:
    return register_model(settings=settings, name="shapes classifier")


@pytest.fixture(scope="module")
def captions_id(settings: Settings) -> str:
    return register_model(settings=settings, kind="captions", name="shapes captions")


def _model_cache(client: TestClient) -> ModelCache:
    model_cache: ModelCache = client.app.state.model_cache  # type: ignore[attr-defined]
    return model_cache


def _cached(client: TestClient, settings: Settings, model_id: str) -> CachedModel:
    return _model_cache(client).get(model_id, storage.model_dir(settings.data_dir, model_id))


# Answers.


def test_classification_ranks_every_label_with_probabilities(
    client: TestClient, classifier_id: str
) -> None:
    images = [encoded(shape_png("red circle")), encoded(shape_png("blue triangle", seed=1))]

    response = post_json(client, model_id=classifier_id, images=images)

    assert response.status_code == 200
    body = response.json()
    assert body["model_id"] == classifier_id
    assert len(body["predictions"]) == 2
    for ranking in body["predictions"]:
        # The default top_k of 5 is capped at the model's 3 labels.
        assert {entry["label"] for entry in ranking} == set(SHAPE_LABELS)
        scores = [entry["score"] for entry in ranking]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= score <= 1.0 for score in scores)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("top_k", [1, 2])
def test_top_k_keeps_the_best_labels(client: TestClient, classifier_id: str, top_k: int) -> None:
    image = encoded(shape_png())
    full = post_json(client, model_id=classifier_id, images=[image]).json()["predictions"][0]

    response = post_json(client, model_id=classifier_id, images=[image], top_k=top_k)

    assert response.status_code == 200
    assert_same_answer(response.json()["predictions"][0], full[:top_k])


def test_top_k_above_the_label_count_returns_every_label(
    client: TestClient, classifier_id: str
) -> None:
    response = post_json(client, model_id=classifier_id, images=[encoded(shape_png())], top_k=1000)

    assert response.status_code == 200
    assert len(response.json()["predictions"][0]) == len(SHAPE_LABELS)


def test_identical_images_get_identical_answers(client: TestClient, classifier_id: str) -> None:
    image = encoded(shape_png())
    images = [image, encoded(shape_png("green square", seed=3)), image]

    ranked = post_json(client, model_id=classifier_id, images=images).json()["predictions"]
    compared = post_json(client, model_id=classifier_id, images=images, texts=TEXTS).json()

    assert_same_answer(ranked[0], ranked[2])
    assert_same_answer(compared["similarity"][0], compared["similarity"][2])
    assert_same_answer(compared["probabilities"][0], compared["probabilities"][2])


def test_texts_give_cosine_similarity_and_softmax_over_texts(
    client: TestClient, settings: Settings, classifier_id: str
) -> None:
    images = [encoded(shape_png()), encoded(shape_png("blue triangle", seed=1))]

    response = post_json(client, model_id=classifier_id, images=images, texts=TEXTS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model_id", "similarity", "probabilities"}
    assert [len(row) for row in body["similarity"]] == [len(TEXTS)] * 2
    assert all(-1.0 <= value <= 1.0 for row in body["similarity"] for value in row)
    logit_scale = _cached(client, settings, classifier_id).logit_scale
    expected = (logit_scale * torch.tensor(body["similarity"])).softmax(dim=-1)
    assert torch.allclose(torch.tensor(body["probabilities"]), expected, atol=1e-5)
    assert [sum(row) for row in body["probabilities"]] == pytest.approx([1.0, 1.0], abs=1e-5)


def test_multipart_and_json_give_the_same_classification(
    client: TestClient, classifier_id: str
) -> None:
    payloads = [shape_png(), shape_png("green square", seed=2)]

    from_json = post_json(client, model_id=classifier_id, images=[encoded(p) for p in payloads])
    from_form = post_multipart(
        client, [("one.png", payloads[0]), ("two.png", payloads[1])], model_id=classifier_id
    )

    assert from_form.status_code == 200
    assert_same_answer(from_form.json(), from_json.json())


@pytest.mark.parametrize(
    "texts_field",
    [TEXTS, '["a photo of a red circle.", "a photo of a blue triangle.", "a green square"]'],
)
def test_multipart_texts_match_json_texts(
    client: TestClient, classifier_id: str, texts_field: Any
) -> None:
    payload = shape_png()

    from_json = post_json(client, model_id=classifier_id, images=[encoded(payload)], texts=TEXTS)
    from_form = post_multipart(
        client, [("one.png", payload)], model_id=classifier_id, texts=texts_field
    )

    assert from_form.status_code == 200
    assert_same_answer(from_form.json(), from_json.json())


def test_multipart_top_k_is_honoured(client: TestClient, classifier_id: str) -> None:
    response = post_multipart(client, [("one.png", shape_png())], model_id=classifier_id, top_k="2")

    assert response.status_code == 200
    assert len(response.json()["predictions"][0]) == 2


def test_a_data_url_is_accepted(client: TestClient, classifier_id: str) -> None:
    image = f"data:image/png;base64,{encoded(shape_png())}"

    response = post_json(client, model_id=classifier_id, images=[image])

    assert response.status_code == 200


def test_a_captions_model_compares_with_texts(client: TestClient, captions_id: str) -> None:
    response = post_json(client, model_id=captions_id, images=[encoded(shape_png())], texts=TEXTS)

    assert response.status_code == 200
    assert len(response.json()["similarity"][0]) == len(TEXTS)


def test_base64_wrapped_in_lines_is_accepted(client: TestClient, classifier_id: str) -> None:
    image = encoded(shape_png())
    wrapped = "\n".join(image[start : start + 76] for start in range(0, len(image), 76))

    response = post_json(client, model_id=classifier_id, images=[wrapped])

    assert response.status_code == 200
    assert_same_answer(
        response.json(), post_json(client, model_id=classifier_id, images=[image]).json()
    )


def test_label_embeddings_are_computed_once_per_model(
    client: TestClient, settings: Settings, classifier_id: str
) -> None:
    image = encoded(shape_png())
    post_json(client, model_id=classifier_id, images=[image])
    model_cache = _model_cache(client)
    loads = model_cache.loads
    embeddings = _cached(client, settings, classifier_id).label_embeddings

    post_json(client, model_id=classifier_id, images=[image])

    assert classifier_id in model_cache
    assert model_cache.loads == loads
    assert _cached(client, settings, classifier_id).label_embeddings is embeddings


# Concurrency.


Responses = list[httpx.Response | None]


def post_while_model_busy(
    client: TestClient,
    cached: CachedModel,
    bodies: list[dict[str, Any]],
    *,
    while_busy: Callable[[Responses], None],
) -> list[httpx.Response]:
    """Send every body at once while the model's lock is held, run `while_busy`, then let go.

    `while_busy` sees the responses as they arrive (None until then).
    """
    responses: Responses = [None] * len(bodies)

    def send(index: int) -> None:
        responses[index] = client.post("/predict", json=bodies[index])

    threads = [threading.Thread(target=send, args=(index,)) for index in range(len(bodies))]
    with cached.lock:
        for thread in threads:
            thread.start()
        while_busy(responses)
    for thread in threads:
        thread.join(timeout=120)
    finished = [response for response in responses if response is not None]
    assert len(finished) == len(bodies), "a request never finished, or raised in the client"
    return finished


def test_a_corrupt_image_fails_alone_while_concurrent_requests_succeed(
    client: TestClient, settings: Settings, classifier_id: str
) -> None:
    good = [encoded(shape_png(label, seed)) for seed, label in enumerate(SHAPE_LABELS)]
    classify = {"model_id": classifier_id, "images": good}
    similarity = {"model_id": classifier_id, "images": good[:2], "texts": TEXTS}
    corrupt = {"model_id": classifier_id, "images": [good[0], encoded(shape_png()[:100])]}
    alone = [post_json(client, **body).json() for body in (classify, similarity)]
    cached = _cached(client, settings, classifier_id)
    refused_while_busy: list[bool] = []

    responses = post_while_model_busy(
        client,
        cached,
        [classify, corrupt, similarity, classify],
        # The bad image is refused while the model is still busy: decoding is outside its lock.
        while_busy=lambda responses: refused_while_busy.append(
            wait_until(lambda: responses[1] is not None)
        ),
    )

    assert refused_while_busy == [True]
    assert [response.status_code for response in responses] == [200, 422, 200, 200]
    assert responses[1].json()["detail"].startswith("images[1]: corrupt image")
    assert_same_answer(responses[0].json(), alone[0])
    assert_same_answer(responses[2].json(), alone[1])
    assert_same_answer(responses[3].json(), alone[0])


def test_fifty_concurrent_requests_fit_through_a_pool_of_two_connections(
    settings: Settings, classifier_id: str
) -> None:
    # Requests that held their session while waiting for the model would each keep one of the
    # two connections, and the rest would time out after a second: 500s.
    small_pool = {
        "database_pool_size": 2,
        "database_max_overflow": 0,
        "database_pool_timeout_seconds": 1.0,
    }
    small_settings = settings.model_copy(update=small_pool)
    body = {"model_id": classifier_id, "images": [encoded(shape_png())]}
    engine = get_engine(small_settings.resolved_database_url, small_settings.database_pool)
    observed: dict[str, Any] = {}

    def while_busy(_responses: Responses) -> None:
        observed["queued"] = wait_until(lambda: cached.requests.pending_count() >= 10)
        time.sleep(1.5)  # longer than the pool timeout
        observed["connections_in_use"] = engine.pool.checkedout()  # type: ignore[attr-defined]

    app = create_app(small_settings, run_reconciler=False)
    with TestClient(app, raise_server_exceptions=False) as small_client:
        assert post_json(small_client, **body).status_code == 200
        cached = _cached(small_client, small_settings, classifier_id)

        responses = post_while_model_busy(small_client, cached, [body] * 50, while_busy=while_busy)

    assert observed == {"queued": True, "connections_in_use": 0}
    assert [response.status_code for response in responses] == [200] * 50
    assert all(len(response.json()["predictions"]) == 1 for response in responses)


# Errors.


def test_an_unknown_model_is_404(client: TestClient) -> None:
    response = post_json(client, model_id="nope", images=[encoded(shape_png())])

    assert response.status_code == 404
    assert response.json() == {"detail": "model nope not found"}


def test_invalid_base64_names_the_image(client: TestClient, classifier_id: str) -> None:
    images = [encoded(shape_png()), encoded(shape_png()), "not base64!"]

    response = post_json(client, model_id=classifier_id, images=images)

    assert response.status_code == 422
    assert response.json() == {"detail": "images[2] is not valid base64"}


def test_an_undecodable_image_is_named_by_index(client: TestClient, classifier_id: str) -> None:
    images = [encoded(shape_png()), encoded(b"plain text, not a picture")]

    response = post_json(client, model_id=classifier_id, images=images)

    assert response.status_code == 422
    assert response.json()["detail"].startswith("images[1]: not an image in an allowed format")


def test_an_undecodable_file_is_named_by_file_name(client: TestClient, classifier_id: str) -> None:
    files = [("ok.png", shape_png()), ("notes.txt", b"plain text, not a picture")]

    response = post_multipart(client, files, model_id=classifier_id)

    assert response.status_code == 422
    assert response.json()["detail"].startswith("file 'notes.txt': not an image")


def test_no_images_is_422(client: TestClient, classifier_id: str) -> None:
    from_json = post_json(client, model_id=classifier_id, images=[])
    from_form = client.post("/predict", files=[("model_id", (None, classifier_id))])

    for response in (from_json, from_form):
        assert response.status_code == 422
        assert response.json()["detail"].startswith("no images: send at least one")


@pytest.mark.parametrize(
    ("texts", "detail"),
    [
        ([], "texts is empty: send at least one text, or leave texts out"),
        (["a red circle", "  "], "texts[1] is empty"),
    ],
)
def test_empty_texts_are_422(
    client: TestClient, classifier_id: str, texts: list[str], detail: str
) -> None:
    response = post_json(client, model_id=classifier_id, images=[encoded(shape_png())], texts=texts)

    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail)


def test_an_empty_json_array_of_texts_in_a_form_is_422(
    client: TestClient, classifier_id: str
) -> None:
    response = post_multipart(client, [("a.png", shape_png())], model_id=classifier_id, texts="[]")

    assert response.status_code == 422
    assert response.json()["detail"].startswith("texts is empty")


def test_a_broken_json_array_of_texts_in_a_form_is_422(
    client: TestClient, classifier_id: str
) -> None:
    response = post_multipart(
        client, [("a.png", shape_png())], model_id=classifier_id, texts='["unclosed'
    )

    assert response.status_code == 422
    assert response.json()["detail"].startswith("texts looks like a JSON array but is not valid")


@pytest.mark.parametrize("top_k", [0, 1001])
def test_top_k_out_of_range_is_422(client: TestClient, classifier_id: str, top_k: int) -> None:
    image = shape_png()

    from_json = post_json(client, model_id=classifier_id, images=[encoded(image)], top_k=top_k)
    from_form = post_multipart(client, [("a.png", image)], model_id=classifier_id, top_k=top_k)

    for response in (from_json, from_form):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "top_k"]


def test_a_misspelt_field_is_422_not_ignored(client: TestClient, classifier_id: str) -> None:
    response = post_json(
        client, model_id=classifier_id, images=[encoded(shape_png())], text=["a red circle"]
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "text"]


def test_a_missing_model_id_in_a_form_is_422(client: TestClient) -> None:
    response = post_multipart(client, [("a.png", shape_png())])

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "model_id"]


def test_files_sent_as_a_text_field_are_422(client: TestClient, classifier_id: str) -> None:
    parts = [("model_id", (None, classifier_id)), ("files", (None, "a.png"))]

    response = client.post("/predict", files=parts)

    assert response.status_code == 422
    assert response.json() == {"detail": "files[0] must be a file upload, not a text field"}


def test_a_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_an_unsupported_content_type_is_415(client: TestClient) -> None:
    response = client.post("/predict", content=b"hello", headers={"content-type": "text/plain"})

    assert response.status_code == 415
    assert "send application/json or multipart/form-data" in response.json()["detail"]


def test_a_captions_model_without_texts_is_422(client: TestClient, captions_id: str) -> None:
    response = post_json(client, model_id=captions_id, images=[encoded(shape_png())])

    assert response.status_code == 422
    assert response.json() == {
        "detail": f"model {captions_id} is a captions model with no labels to classify over: "
        "send `texts` to compare the images with"
    }


def test_a_model_without_its_folder_is_409(client: TestClient, settings: Settings) -> None:
    model_id = register_model(settings=settings, write_files=False)

    response = post_json(client, model_id=model_id, images=[encoded(shape_png())])

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"model {model_id} cannot be served: its model folder is missing "
        f"(models/{model_id})"
    }


def test_a_model_whose_files_do_not_load_is_409(client: TestClient, settings: Settings) -> None:
    model_id = register_model(settings=settings)
    (storage.model_dir(settings.data_dir, model_id) / "config.json").write_text("{ not json")

    response = post_json(client, model_id=model_id, images=[encoded(shape_png())])

    assert response.status_code == 409
    assert response.json()["detail"].startswith(
        f"model {model_id} cannot be served: its files do not load"
    )


def test_a_model_whose_folder_returns_loads_again(client: TestClient, settings: Settings) -> None:
    model_id = register_model(settings=settings)
    folder = storage.model_dir(settings.data_dir, model_id)
    hidden = folder.with_name(f"{model_id}-hidden")
    shutil.move(folder, hidden)
    assert post_json(client, model_id=model_id, images=[encoded(shape_png())]).status_code == 409

    shutil.move(hidden, folder)

    assert post_json(client, model_id=model_id, images=[encoded(shape_png())]).status_code == 200


# Limits (the strict app allows 2 images, 2 texts and 5000 bytes per image).


def test_too_many_images_is_413(strict_client: TestClient, classifier_id: str) -> None:
    images = [encoded(shape_png(seed=seed)) for seed in range(3)]

    response = post_json(strict_client, model_id=classifier_id, images=images)

    assert response.status_code == 413
    assert response.json() == {"detail": "too many images: at most 2 per request, got 3"}


def test_too_many_files_is_413(strict_client: TestClient, classifier_id: str) -> None:
    files = [(f"{seed}.png", shape_png(seed=seed)) for seed in range(3)]

    response = post_multipart(strict_client, files, model_id=classifier_id)

    assert response.status_code == 413
    assert response.json()["detail"].startswith("too many images: at most 2 per request")


def test_too_many_texts_is_413(strict_client: TestClient, classifier_id: str) -> None:
    response = post_json(
        strict_client, model_id=classifier_id, images=[encoded(shape_png())], texts=TEXTS
    )

    assert response.status_code == 413
    assert response.json() == {"detail": "too many texts: at most 2 per request, got 3"}


@pytest.mark.parametrize("route", ["json", "multipart", "zero-shot", "embed"])
def test_a_text_over_the_character_limit_is_422_before_tokenizing(
    client: TestClient, settings: Settings, classifier_id: str, route: str
) -> None:
    limit = settings.predict_max_text_chars
    texts = ["a red circle", "x" * (limit + 1)]
    image = shape_png()
    if route == "json":
        response = post_json(client, model_id=classifier_id, images=[encoded(image)], texts=texts)
    elif route == "multipart":
        response = post_multipart(client, [("a.png", image)], model_id=classifier_id, texts=texts)
    elif route == "zero-shot":
        response = post_json(client, base_model="tiny-clip", images=[encoded(image)], texts=texts)
    else:
        response = client.post("/embed", json={"base_model": "tiny-clip", "texts": texts})

    assert response.status_code == 422
    assert response.json() == {
        "detail": f"texts[1] is {limit + 1} characters, over the limit of {limit} "
        "(CLIP reads only its first 77 tokens)"
    }


def test_a_text_at_the_character_limit_is_embedded(client: TestClient, settings: Settings) -> None:
    text = "a red circle " * (settings.predict_max_text_chars // 13)
    response = client.post("/embed", json={"base_model": "tiny-clip", "texts": [text]})
    assert response.status_code == 200
    assert len(response.json()["text_embeddings"]) == 1


def test_an_image_over_the_byte_limit_is_413(strict_client: TestClient, classifier_id: str) -> None:
    large = noise_png()
    assert len(large) > 5000

    from_json = post_json(
        strict_client, model_id=classifier_id, images=[encoded(shape_png()), encoded(large)]
    )
    from_form = post_multipart(strict_client, [("noise.png", large)], model_id=classifier_id)

    assert from_json.status_code == 413
    assert from_json.json() == {
        "detail": f"images[1] is {len(large)} bytes, over the limit of 5000"
    }
    assert from_form.status_code == 413
    assert from_form.json() == {
        "detail": f"file 'noise.png' is {len(large)} bytes, over the limit of 5000"
    }


def test_a_json_body_over_the_limit_is_413(strict_client: TestClient) -> None:
    # Two base64 images of at most 5000 bytes, plus 16 MiB for the other fields.
    limit = 2 * 4 * math.ceil(5000 / 3) + 16 * 1024**2

    response = strict_client.post(
        "/predict", content=b" " * (limit + 1), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == {"detail": f"request body is over the limit of {limit} bytes"}
