"""Validation: accuracy and the confusion matrix over the classes, or retrieval recall@1/5.

Evaluation runs on whatever classifies: the class prompts through the text tower, or a
method's trained head; and on any CLIP weights (the live model, the base, a WiSE-FT mix).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import CLIPModel, CLIPTokenizer

from app.ml.class_head import ClassHead
from app.ml.encode import encode_images, encode_texts
from app.ml.manifest import ManifestItem
from app.ml.preprocess import PixelSpec
from worker.training.inputs.augment import eval_pixels
from worker.training.inputs.data import PreparedLoader
from worker.training.inputs.task import TaskTensors

PRIMARY_METRIC = {"classification": "val_accuracy", "captions": "val_mean_recall_at_1"}


@dataclass
class Evaluator:
    """How to turn a loader's images into features: the weights, the pixels, the precision."""

    clip: CLIPModel
    tokenizer: CLIPTokenizer
    pixel_spec: PixelSpec
    precision: AbstractContextManager[Any]
    device: torch.device

    def image_features(self, loader: PreparedLoader) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit features of every image of the loader's split, and their manifest rows."""
        features, rows = [], []
        with self.precision:
            for batch in loader.batches():
                pixels = eval_pixels(batch.squares, self.pixel_spec)
                features.append(encode_images(self.clip, pixels).float())
                rows.append(batch.rows)
        return torch.cat(features), torch.cat(rows)

    def class_logits(
        self, image_features: torch.Tensor, task: TaskTensors, head: ClassHead | None
    ) -> torch.Tensor:
        if head is not None:
            return head(image_features)
        with self.precision:
            class_features = task.class_features(self.clip).float()
        return image_features @ class_features.T


@dataclass
class EvalResult:
    metrics: dict[str, float]
    # Classification: rows are the true class, columns the predicted one.
    confusion: list[list[int]] | None = None
    classes: list[str] = field(default_factory=list)
    # Classification, when asked for: the logits as serving computes them (the class prompts
    # times the logit scale, or the head) and the targets, on the host, for calibration.
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


@torch.inference_mode()
def evaluate(
    evaluator: Evaluator,
    task: TaskTensors,
    loader: PreparedLoader,
    items: list[ManifestItem],
    head: ClassHead | None = None,
    *,
    keep_logits: bool = False,
) -> EvalResult:
    """Metrics on the loader's split of `items` (the whole manifest); none for an empty split.

    `keep_logits` also hands back the served logits and targets (classification), for
    calibration; the metrics are the same either way.
    """
    if not loader.num_samples:
        return EvalResult(metrics={})
    clip = evaluator.clip
    was_training = clip.training
    clip.eval()
    try:
        image_features, rows = evaluator.image_features(loader)
        if task.is_classification:
            logits = evaluator.class_logits(image_features, task, head)
            targets = task.targets(rows)
            result = classification_result(logits.argmax(dim=1), targets, task.classes)
            if keep_logits:
                result.logits = served_logits(logits, clip, head).float().cpu()
                result.targets = targets.cpu()
            return result
        captions = [str(items[row].text) for row in rows.tolist()]
        return EvalResult(metrics=retrieval_metrics(image_features, captions, evaluator))
    finally:
        clip.train(was_training)


def served_logits(logits: torch.Tensor, clip: CLIPModel, head: ClassHead | None) -> torch.Tensor:
    """Evaluation's logits as serving computes them: a head's as they are; the class prompts'
    cosines times the model's logit scale, as serving's zero-shot head does (same argmax)."""
    if head is not None:
        return logits
    return logits * clip.logit_scale.exp().float()


def classification_result(
    predictions: torch.Tensor, targets: torch.Tensor, classes: list[str]
) -> EvalResult:
    num_classes = len(classes)
    pairs = targets.long() * num_classes + predictions.long()
    confusion = torch.bincount(pairs.cpu(), minlength=num_classes * num_classes)
    accuracy = (predictions == targets).float().mean().item()
    return EvalResult(
        metrics={"val_accuracy": accuracy},
        confusion=confusion.view(num_classes, num_classes).tolist(),
        classes=classes,
    )


def retrieval_metrics(
    image_features: torch.Tensor, captions: list[str], evaluator: Evaluator
) -> dict[str, float]:
    """Recall@k where a hit is any caption string equal to the image's own.

    Matching by string rather than by index keeps the metric fair when several images share a
    caption, which is common in small domain sets.
    """
    unique_captions = list(dict.fromkeys(captions))
    with evaluator.precision:
        text_features = encode_texts(
            evaluator.clip, evaluator.tokenizer, unique_captions, evaluator.device
        ).float()
    similarity = (image_features @ text_features.T).cpu()
    image_targets = torch.tensor([unique_captions.index(caption) for caption in captions])
    metrics: dict[str, float] = {}
    for k in (1, 5):
        top_texts = similarity.topk(min(k, similarity.shape[1]), dim=1).indices
        image_hits = (top_texts == image_targets[:, None]).any(dim=1).float()
        top_images = similarity.T.topk(min(k, similarity.shape[0]), dim=1).indices
        text_hits = image_targets[top_images] == torch.arange(len(unique_captions))[:, None]
        metrics[f"val_image_to_text_recall_at_{k}"] = image_hits.mean().item()
        metrics[f"val_text_to_image_recall_at_{k}"] = text_hits.any(dim=1).float().mean().item()
    metrics["val_mean_recall_at_1"] = (
        metrics["val_image_to_text_recall_at_1"] + metrics["val_text_to_image_recall_at_1"]
    ) / 2
    return metrics
