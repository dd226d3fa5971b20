"""Soft voting over the engine's answers: labels matched by name, mismatches named."""

from __future__ import annotations

import pytest
import torch

from app.inference.engine import LabelProbabilities, Similarity
from app.inference.ensemble import (
    LabelMismatch,
    average_label_probabilities,
    average_similarities,
    label_differences,
)


def test_probabilities_are_averaged_per_label_matched_by_name() -> None:
    first = LabelProbabilities(["cat", "dog"], torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    # The same labels in the other order.
    second = LabelProbabilities(["dog", "cat"], torch.tensor([[0.5, 0.5], [0.4, 0.6]]))

    averaged = average_label_probabilities({"a": first, "b": second})

    assert averaged.labels == ["cat", "dog"]
    expected = torch.tensor(
        [[(0.9 + 0.5) / 2, (0.1 + 0.5) / 2], [(0.2 + 0.6) / 2, (0.8 + 0.4) / 2]]
    )
    assert torch.allclose(averaged.probabilities, expected)


def test_one_model_averages_to_its_own_answer() -> None:
    only = LabelProbabilities(["cat", "dog"], torch.tensor([[0.7, 0.3]]))

    averaged = average_label_probabilities({"a": only})

    assert torch.equal(averaged.probabilities, only.probabilities)


def test_the_same_labels_in_any_order_do_not_differ() -> None:
    assert (
        label_differences({"a": ["cat", "dog"], "b": ["dog", "cat"], "c": ["cat", "dog"]}) is None
    )


def test_differences_name_each_model_and_its_labels() -> None:
    labels = {"a": ["cat", "dog"], "b": ["cat", "wolf"], "c": ["dog", "cat"], "d": ["cat"]}

    assert label_differences(labels) == (
        "the models of an ensemble must have the same labels (in any order): compared with "
        "model a, model b lacks 'dog' and adds 'wolf'; model d lacks 'dog'"
    )


def test_averaging_models_with_different_labels_raises() -> None:
    first = LabelProbabilities(["cat", "dog"], torch.tensor([[0.9, 0.1]]))
    second = LabelProbabilities(["cat", "wolf"], torch.tensor([[0.5, 0.5]]))

    with pytest.raises(LabelMismatch, match="model b lacks 'dog' and adds 'wolf'"):
        average_label_probabilities({"a": first, "b": second})


def test_similarities_average_both_cosine_and_softmax() -> None:
    first = Similarity(cosine=torch.tensor([[0.2, -0.4]]), probabilities=torch.tensor([[0.6, 0.4]]))
    second = Similarity(cosine=torch.tensor([[0.4, 0.0]]), probabilities=torch.tensor([[0.2, 0.8]]))

    averaged = average_similarities([first, second])

    assert torch.allclose(averaged.cosine, torch.tensor([[0.3, -0.2]]))
    assert torch.allclose(averaged.probabilities, torch.tensor([[0.4, 0.6]]))
