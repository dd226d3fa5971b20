"""Blocking inference over a cached model: top-k classification and image-text similarity.

Call these from a worker thread, never on the event loop: they run the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from app.inference.cache import CachedModel
from app.ml.encode import encode_images, encode_texts

IMAGE_BATCH_SIZE = 32
# Images from concurrent requests that one shared pass may take.
MAX_SHARED_IMAGES = 128


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Similarity:
    # Cosine similarity, one row per image and one column per text.
    cosine: list[list[float]]
    # Softmax over the texts of each image's logits (cosine times the model's logit scale).
    probabilities: list[list[float]]


def embed_images(
    cached: CachedModel, images: Sequence[Image.Image], *, batch_size: int = IMAGE_BATCH_SIZE
) -> torch.Tensor:
    """Unit-length image embeddings, one row per image, computed `batch_size` images at a time."""
    batches = []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack(
            [cached.transform(image) for image in images[start : start + batch_size]]
        )
        batches.append(encode_images(cached.loaded_clip.clip, pixels.to(cached.device)))
    return torch.cat(batches)


def label_probabilities(
    cached: CachedModel, images: Sequence[Image.Image], *, batch_size: int = IMAGE_BATCH_SIZE
) -> torch.Tensor:
    """Softmax over the model's labels, one row per image; call with the model's lock held."""
    if cached.label_embeddings is None:
        raise ValueError(f"model {cached.model_id} has no labels to classify with")
    with torch.inference_mode():
        image_embeddings = embed_images(cached, images, batch_size=batch_size)
        logits = cached.logit_scale * image_embeddings @ cached.label_embeddings.T
        return logits.softmax(dim=-1).cpu()


def classify(
    cached: CachedModel,
    images: Sequence[Image.Image],
    *,
    top_k: int,
    batch_size: int = IMAGE_BATCH_SIZE,
    max_shared_images: int = MAX_SHARED_IMAGES,
) -> list[list[LabelScore]]:
    """The `top_k` most probable labels per image, best first; probabilities span all labels.

    Concurrent calls for the same model share forward passes (see `app.inference.batching`).
    """
    probabilities = cached.requests.run(
        images,
        model_lock=cached.lock,
        forward=lambda batch: label_probabilities(cached, batch, batch_size=batch_size),
        max_images=max_shared_images,
    )
    top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    labels = cached.metadata.labels
    return [
        [LabelScore(labels[index], score) for index, score in zip(indices, scores, strict=True)]
        for indices, scores in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def compare(
    cached: CachedModel,
    images: Sequence[Image.Image],
    texts: list[str],
    *,
    batch_size: int = IMAGE_BATCH_SIZE,
) -> Similarity:
    """Cosine similarity of every image with every text, and per-image softmax over the texts."""
    loaded_clip = cached.loaded_clip
    with cached.lock, torch.inference_mode():
        image_embeddings = embed_images(cached, images, batch_size=batch_size)
        text_embeddings = encode_texts(
            loaded_clip.clip, loaded_clip.tokenizer, texts, cached.device
        )
        # Rounding can push unit-vector dot products a hair past 1.
        cosine = (image_embeddings @ text_embeddings.T).clamp(-1.0, 1.0)
        probabilities = (cached.logit_scale * cosine).softmax(dim=-1)
    return Similarity(cosine=cosine.tolist(), probabilities=probabilities.tolist())
