"""Concurrent requests for one model, classification and similarity alike, share forward passes
and get the same answers as alone; a request that breaks a shared pass fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from app.inference.batching import PassLimits
from app.inference.cache import CachedModel, load_cached_model
from app.inference.engine import LabelScore, Similarity, classify, compare
from app.ml.preprocess import resize_and_crop
from app.ml.synthetic import make_images
from tests.model_factory import write_model_folder

TEXTS = [
    ["a photo of a red circle.", "a blue triangle"],
    ["a green square", "a photo of a red circle.", "a yellow circle"],
    ["a blue triangle"],
]


@pytest.fixture
def cached(tmp_path: Path) -> CachedModel:
    write_model_folder(tmp_path / "model")
    return load_cached_model("m", tmp_path / "model", torch.device("cpu"))


def pixels(cached: CachedModel, count: int, seed: int) -> torch.Tensor:
    images = [sample.image for sample in make_images(per_class=count, seed=seed)][:count]
    return torch.stack([resize_and_crop(image, cached.pixel_spec) for image in images])


def run_while_busy(cached: CachedModel, calls: list[Callable[[], Any]]) -> list[Any]:
    """Queue every call while a pass is "in flight" (the model's lock held), then let them run.

    Each answer is the call's result, or the exception it raised.
    """
    answers: list[Any] = [None] * len(calls)

    def call(index: int) -> None:
        try:
            answers[index] = calls[index]()
        except Exception as error:
            answers[index] = error

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(calls))]
    with cached.lock:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while cached.requests.pending_count() < len(calls):
            assert time.monotonic() < deadline, "the requests never all queued"
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    return answers


def assert_same_ranking(actual: list[list[LabelScore]], expected: list[list[LabelScore]]) -> None:
    assert [[entry.label for entry in row] for row in actual] == [
        [entry.label for entry in row] for row in expected
    ]
    for actual_row, expected_row in zip(actual, expected, strict=True):
        for entry, expected_entry in zip(actual_row, expected_row, strict=True):
            assert entry.score == pytest.approx(expected_entry.score, abs=1e-5)


def assert_same_similarity(actual: Similarity, expected: Similarity) -> None:
    assert torch.allclose(actual.cosine, expected.cosine, atol=1e-5)
    assert torch.allclose(actual.probabilities, expected.probabilities, atol=1e-5)


def test_classification_requests_that_queue_together_share_one_pass(
    cached: CachedModel,
) -> None:
    requests = [pixels(cached, 1, seed) for seed in range(6)] + [pixels(cached, 3, 100)]
    alone = [classify(cached, request, top_k=2) for request in requests]
    before = cached.requests.forward_passes

    answers = run_while_busy(
        cached, [lambda request=request: classify(cached, request, top_k=2) for request in requests]
    )

    assert cached.requests.forward_passes - before == 1
    for answer, expected in zip(answers, alone, strict=True):
        assert_same_ranking(answer, expected)


def test_similarity_requests_share_passes_with_the_answers_they_get_alone(
    cached: CachedModel,
) -> None:
    requests = [(pixels(cached, 2, seed), texts) for seed, texts in enumerate(TEXTS)]
    alone = [compare(cached, images, texts) for images, texts in requests]
    before = cached.requests.forward_passes

    answers = run_while_busy(
        cached,
        [
            lambda images=images, texts=texts: compare(cached, images, texts)
            for images, texts in requests
        ],
    )

    assert cached.requests.forward_passes - before == 1
    for answer, expected, (_, texts) in zip(answers, alone, requests, strict=True):
        assert len(answer.cosine) == 2
        assert [len(row) for row in answer.cosine] == [len(texts)] * 2
        assert_same_similarity(answer, expected)


def test_classification_and_similarity_share_one_pass(cached: CachedModel) -> None:
    images = [pixels(cached, 1, seed) for seed in range(4)]
    alone_ranked = classify(cached, images[0], top_k=3)
    alone_compared = compare(cached, images[1], TEXTS[1])
    before = cached.requests.forward_passes

    ranked, compared, *_ = run_while_busy(
        cached,
        [
            lambda: classify(cached, images[0], top_k=3),
            lambda: compare(cached, images[1], TEXTS[1]),
            lambda: classify(cached, images[2], top_k=1),
            lambda: compare(cached, images[3], TEXTS[0]),
        ],
    )

    assert cached.requests.forward_passes - before == 1
    assert_same_ranking(ranked, alone_ranked)
    assert_same_similarity(compared, alone_compared)


@pytest.mark.parametrize(
    ("limits", "passes"),
    [(PassLimits(max_images=4, max_texts=100), 2), (PassLimits(max_images=100, max_texts=4), 3)],
)
def test_a_pass_takes_no_more_images_or_texts_than_its_limits(
    cached: CachedModel, limits: PassLimits, passes: int
) -> None:
    # Six requests of one image and two texts each.
    requests = [pixels(cached, 1, seed) for seed in range(6)]
    before = cached.requests.forward_passes

    answers = run_while_busy(
        cached,
        [
            lambda request=request: compare(cached, request, TEXTS[0], limits=limits)
            for request in requests
        ],
    )

    assert cached.requests.forward_passes - before == passes
    assert all(isinstance(answer, Similarity) for answer in answers)


def test_a_lone_request_runs_at_once_in_its_own_pass(cached: CachedModel) -> None:
    before = cached.requests.forward_passes

    answer = classify(cached, pixels(cached, 2, 7), top_k=1)

    assert len(answer) == 2
    assert cached.requests.forward_passes - before == 1
    assert cached.requests.pending_count() == 0


def test_a_request_that_breaks_a_shared_pass_fails_alone(cached: CachedModel) -> None:
    good = [pixels(cached, 1, seed) for seed in range(3)]
    alone = [classify(cached, request, top_k=2) for request in good]
    wrong_size = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)  # the model takes 32 x 32

    answers = run_while_busy(
        cached,
        [
            lambda: classify(cached, good[0], top_k=2),
            lambda: classify(cached, wrong_size, top_k=2),
            lambda: classify(cached, good[1], top_k=2),
            lambda: compare(cached, good[2], TEXTS[0]),
        ],
    )

    assert isinstance(answers[1], Exception)
    assert_same_ranking(answers[0], alone[0])
    assert_same_ranking(answers[2], alone[1])
    assert isinstance(answers[3], Similarity)
    # The queue is usable again afterwards.
    assert_same_ranking(classify(cached, good[0], top_k=2), alone[0])
