"""Soft voting: several models' answers for the same images, averaged.

Built only on what the engine answers for each model (per-label probabilities, or cosine and
softmax over texts), never on how a model scores: whatever produces a model's probabilities,
class prompts or a trained head, its vote counts the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from app.inference.engine import LabelProbabilities, Similarity


class LabelMismatch(ValueError):
    """The models do not have the same labels; the message names them and what differs."""


def label_differences(labels_by_model: Mapping[str, Sequence[str]]) -> str | None:
    """None when every model has the same labels, in any order; else what differs, per model."""
    (first_id, first_labels), *others = labels_by_model.items()
    differences = []
    for model_id, labels in others:
        lacks = [label for label in first_labels if label not in labels]
        adds = [label for label in labels if label not in first_labels]
        parts = [f"lacks {_quoted(lacks)}"] if lacks else []
        parts += [f"adds {_quoted(adds)}"] if adds else []
        if parts:
            differences.append(f"model {model_id} {' and '.join(parts)}")
    if not differences:
        return None
    return (
        "the models of an ensemble must have the same labels (in any order): compared with "
        f"model {first_id}, " + "; ".join(differences)
    )


def average_label_probabilities(
    answers_by_model: Mapping[str, LabelProbabilities],
) -> LabelProbabilities:
    """The mean of each label's probability over the models, in the first model's label order.

    Columns are matched by label name, so models may list their labels in any order;
    `LabelMismatch` if their labels differ.
    """
    differences = label_differences(
        {model_id: answer.labels for model_id, answer in answers_by_model.items()}
    )
    if differences is not None:
        raise LabelMismatch(differences)
    first, *_ = answers_by_model.values()
    labels = first.labels
    aligned = []
    for answer in answers_by_model.values():
        column = {label: index for index, label in enumerate(answer.labels)}
        aligned.append(answer.probabilities[:, [column[label] for label in labels]])
    return LabelProbabilities(labels=labels, probabilities=torch.stack(aligned).mean(dim=0))


def average_similarities(answers: Sequence[Similarity]) -> Similarity:
    """The mean over the models of the softmax over texts, and of the cosine similarity."""
    return Similarity(
        cosine=torch.stack([answer.cosine for answer in answers]).mean(dim=0),
        probabilities=torch.stack([answer.probabilities for answer in answers]).mean(dim=0),
    )


def _quoted(labels: Sequence[str]) -> str:
    return ", ".join(repr(label) for label in labels)
