"""Validation metrics: accuracy over class prompts, or retrieval recall@1/5 both ways."""

from __future__ import annotations

import torch
from transformers import CLIPModel, CLIPTokenizer

from app.ml.encode import encode_images, encode_texts, encode_tokens
from app.ml.manifest import ManifestItem
from worker.training.data import PreparedLoader
from worker.training.loop import EpochContext

PRIMARY_METRIC = {"classification": "val_accuracy", "captions": "val_mean_recall_at_1"}


@torch.inference_mode()
def evaluate(
    context: EpochContext, loader: PreparedLoader, items: list[ManifestItem]
) -> dict[str, float]:
    """Metrics on the loader's split of `items` (the whole manifest); none for an empty split."""
    if not loader.num_samples:
        return {}
    clip, device = context.clip, context.device
    was_training = clip.training
    clip.eval()
    rows: list[torch.Tensor] = []
    features = []
    with context.precision:
        for batch in loader.batches():
            features.append(encode_images(clip, context.eval_pixels(batch)).float())
            rows.append(batch.rows)
        image_features = torch.cat(features)
        if context.kind == "classification":
            # The run's class prompts and per-row targets, already tokenized and on the device.
            assert context.class_tokens is not None and context.class_targets is not None
            text_features = encode_tokens(clip, context.class_tokens).float()
            targets = context.class_targets[torch.cat(rows)]
            metrics = classification_metrics(image_features, text_features, targets)
        else:
            captions = [str(items[row].text) for row in torch.cat(rows).tolist()]
            metrics = retrieval_metrics(image_features, captions, clip, context.tokenizer, device)
    clip.train(was_training)
    return metrics


def classification_metrics(
    image_features: torch.Tensor, class_text_features: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    predictions = (image_features @ class_text_features.T).argmax(dim=1)
    correct = (predictions == targets).float()
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
