"""Validation metrics: accuracy over class prompts, or retrieval recall@1/5 both ways."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from transformers import CLIPModel, CLIPTokenizer

from app.ml.encode import class_prompts, encode_images, encode_texts
from worker.training.data import BatchLoader

PRIMARY_METRIC = {"classification": "val_accuracy", "captions": "val_mean_recall_at_1"}


@torch.inference_mode()
def evaluate(
    *,
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    loader: BatchLoader,
    kind: str,
    classes: list[str],
    prompt_template: str,
    device: torch.device,
    precision: AbstractContextManager[Any],
) -> dict[str, float]:
    """Metrics on the val split; an empty split gives no metrics."""
    if not loader.items:
        return {}
    was_training = clip.training
    clip.eval()
    with precision:
        image_features = torch.cat(
            [
                encode_images(clip, batch.pixel_values.to(device)).float()
                for batch in loader.batches()
            ]
        )
        if kind == "classification":
            prompts = class_prompts(classes, prompt_template)
            text_features = encode_texts(clip, tokenizer, prompts, device).float()
            targets = [classes.index(str(item.label)) for item in loader.items]
            metrics = classification_metrics(image_features, text_features, targets)
        else:
            captions = [str(item.text) for item in loader.items]
            metrics = retrieval_metrics(image_features, captions, clip, tokenizer, device)
    clip.train(was_training)
    return metrics


def classification_metrics(
    image_features: torch.Tensor, class_text_features: torch.Tensor, targets: list[int]
) -> dict[str, float]:
    predictions = (image_features @ class_text_features.T).argmax(dim=1).cpu()
    correct = (predictions == torch.tensor(targets)).float()
    return {"val_accuracy": correct.mean().item()}


def retrieval_metrics(
    image_features: torch.Tensor,
    captions: list[str],
    clip: CLIPModel,
    tokenizer: CLIPTokenizer,
    device: torch.device,
) -> dict[str, float]:
    """Recall@k where a hit is any caption string equal to the image's own.

    Matching by string rather than by index keeps the metric fair when several images share a
    caption, which is common in small domain sets.
    """
    unique_captions = list(dict.fromkeys(captions))
    text_features = encode_texts(clip, tokenizer, unique_captions, device).float()
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
