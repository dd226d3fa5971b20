"""Concurrent classification requests for one model share forward passes, with the same answers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.inference.cache import CachedModel, load_cached_model
from app.inference.engine import LabelScore, classify, label_probabilities
from app.ml.synthetic import make_images
from tests.model_factory import write_model_folder


@pytest.fixture
def cached(tmp_path: Path) -> CachedModel:
    write_model_folder(tmp_path / "model")
    return load_cached_model("m", tmp_path / "model", torch.device("cpu"))


def images(count: int, seed: int) -> list[Image.Image]:
    return [sample.image for sample in make_images(per_class=count, seed=seed)][:count]


def classify_concurrently(
    cached: CachedModel, requests: list[list[Image.Image]], *, top_k: int, max_shared: int = 128
) -> list[list[list[LabelScore]]]:
    """Queue every request while the model is busy, then let them all run."""
    answers: list[list[list[LabelScore]]] = [[] for _ in requests]

    def call(index: int) -> None:
        answers[index] = classify(
            cached, requests[index], top_k=top_k, max_shared_images=max_shared
        )

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(requests))]
    with cached.lock:  # a forward pass "in flight": every request has to queue
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while cached.requests.pending_count() < len(requests):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    return answers


def test_requests_that_queue_together_share_one_forward_pass(cached: CachedModel) -> None:
    requests = [images(1, seed) for seed in range(6)] + [images(3, 100)]
    before = cached.requests.forward_passes
    answers = classify_concurrently(cached, requests, top_k=2)
    assert cached.requests.forward_passes - before == 1
    assert [len(answer) for answer in answers] == [1, 1, 1, 1, 1, 1, 3]
    assert all(len(row) == 2 for answer in answers for row in answer)


def test_shared_passes_give_each_request_its_own_answer(cached: CachedModel) -> None:
    requests = [images(2, seed) for seed in range(5)]
    alone = [
        label_probabilities(cached, request).tolist() for request in requests
    ]  # one request per pass
    answers = classify_concurrently(cached, requests, top_k=3)
    for request_alone, answer in zip(alone, answers, strict=True):
        for probabilities, ranked in zip(request_alone, answer, strict=True):
            labels = cached.metadata.labels
            expected = sorted(zip(probabilities, labels, strict=True), reverse=True)[:3]
            assert [entry.label for entry in ranked] == [label for _, label in expected]
            for entry, (probability, _) in zip(ranked, expected, strict=True):
                assert entry.score == pytest.approx(probability, abs=1e-5)


def test_a_pass_takes_no_more_images_than_its_limit(cached: CachedModel) -> None:
    requests = [images(1, seed) for seed in range(6)]
    before = cached.requests.forward_passes
    classify_concurrently(cached, requests, top_k=1, max_shared=4)
    assert cached.requests.forward_passes - before == 2


def test_a_lone_request_runs_at_once_in_its_own_pass(cached: CachedModel) -> None:
    before = cached.requests.forward_passes
    answer = classify(cached, images(2, 7), top_k=1)
    assert len(answer) == 2
    assert cached.requests.forward_passes - before == 1
    assert cached.requests.pending_count() == 0


def test_an_error_in_a_shared_pass_reaches_every_request_in_it(cached: CachedModel) -> None:
    broken = Image.new("RGB", (0, 0))  # cannot be resized: the transform raises
    errors: list[BaseException] = []

    def call(request: list[Image.Image]) -> None:
        try:
            classify(cached, request, top_k=1)
        except Exception as error:
            errors.append(error)

    threads = [
        threading.Thread(target=call, args=(request,)) for request in ([broken], images(1, 3))
    ]
    with cached.lock:
        for thread in threads:
            thread.start()
        while cached.requests.pending_count() < 2:
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    assert len(errors) == 2
    # The queue is usable again afterwards.
    assert len(classify(cached, images(1, 4), top_k=1)) == 1
