"""Validation metrics: accuracy over class prompts, or retrieval recall@1/5 both ways."""

from __future__ import annotations

import torch
from transformers import CLIPModel, CLIPTokenizer

from app.ml.encode import class_prompts, encode_images, encode_texts
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
    rows: list[int] = []
    features = []
    with context.precision:
        for batch in loader.batches():
            features.append(encode_images(clip, context.eval_pixels(batch)).float())
            rows.extend(batch.host_rows.tolist())
        image_features = torch.cat(features)
        if context.kind == "classification":
            prompts = class_prompts(context.classes, context.config.prompt_template)
            text_features = encode_texts(clip, context.tokenizer, prompts, device).float()
            targets = [context.classes.index(str(items[row].label)) for row in rows]
            metrics = classification_metrics(image_features, text_features, targets)
        else:
            captions = [str(items[row].text) for row in rows]
            metrics = retrieval_metrics(image_features, captions, clip, context.tokenizer, device)
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
