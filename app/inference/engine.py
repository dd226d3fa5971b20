"""Blocking inference over a cached model: top-k classification and image-text similarity.

Callers hand in preprocessed uint8 pixels (`app.inference.pixels`); concurrent calls for one
model share forward passes (`app.inference.batching`) whichever of the two they ask for. Call
these from a worker thread, never on the event loop: they run the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from app.core.instruments import FORWARD_PASS_IMAGES
from app.inference.batching import PassLimits
from app.inference.cache import CachedModel
from app.inference.work import ImageWork, PassAnswer
from app.ml.encode import encode_images, encode_texts
from app.ml.preprocess import normalize

IMAGE_BATCH_SIZE = 32
TEXT_BATCH_SIZE = 256
# What one shared pass may take from concurrent requests.
SHARED_PASS_LIMITS = PassLimits(max_images=128, max_texts=1024)


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class LabelProbabilities:
    """A model's probability for each of its labels, per image: what classification ranks."""

    labels: list[str]
    # float32 on the CPU, one row per image and one column per label, in `labels` order.
    probabilities: torch.Tensor


@dataclass(frozen=True)
class Similarity:
    """float32 on the CPU, one row per image and one column per text."""

    cosine: torch.Tensor
    # Softmax over the texts of each image's logits (cosine times the model's logit scale).
    probabilities: torch.Tensor


def classify(
    cached: CachedModel,
    pixels: torch.Tensor,
    *,
    top_k: int,
    batch_size: int = IMAGE_BATCH_SIZE,
    limits: PassLimits = SHARED_PASS_LIMITS,
) -> list[list[LabelScore]]:
    """The `top_k` most probable labels per image, best first; probabilities span all labels."""
    scores = label_probabilities(cached, pixels, batch_size=batch_size, limits=limits)
    return top_labels(scores, top_k=top_k)


def label_probabilities(
    cached: CachedModel,
    pixels: torch.Tensor,
    *,
    batch_size: int = IMAGE_BATCH_SIZE,
    limits: PassLimits = SHARED_PASS_LIMITS,
) -> LabelProbabilities:
    """Every image's probability for each of the model's labels."""
    if cached.class_head is None:
        raise ValueError(f"model {cached.model_id} has no labels to classify with")
    answer = _run(cached, ImageWork(pixels), batch_size=batch_size, limits=limits)
    return LabelProbabilities(labels=cached.metadata.labels, probabilities=answer.probabilities)


def top_labels(scores: LabelProbabilities, *, top_k: int) -> list[list[LabelScore]]:
    """The `top_k` most probable labels per image, best first."""
    probabilities = scores.probabilities
    top = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    return [
        [
            LabelScore(scores.labels[index], score)
            for index, score in zip(indices, values, strict=True)
        ]
        for indices, values in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def compare(
    cached: CachedModel,
    pixels: torch.Tensor,
    texts: list[str],
    *,
    batch_size: int = IMAGE_BATCH_SIZE,
    limits: PassLimits = SHARED_PASS_LIMITS,
) -> Similarity:
    """Cosine similarity of every image with every text, and per-image softmax over the texts."""
    answer = _run(cached, ImageWork(pixels, texts), batch_size=batch_size, limits=limits)
    assert answer.cosine is not None
    return Similarity(cosine=answer.cosine, probabilities=answer.probabilities)


def _run(
    cached: CachedModel, work: ImageWork, *, batch_size: int, limits: PassLimits
) -> PassAnswer:
    return cached.requests.run(
        work,
        model_lock=cached.lock,
        serve=partial(_serve_on_forward_thread, cached, batch_size=batch_size),
        limits=limits,
    )


def _serve_on_forward_thread(
    cached: CachedModel, works: list[ImageWork], *, batch_size: int
) -> list[PassAnswer]:
    # The lock holder hands the pass to the model's own thread and waits (see CachedModel).
    return cached.forward_thread.submit(serve_pass, cached, works, batch_size=batch_size).result()


def serve_pass(
    cached: CachedModel, works: list[ImageWork], *, batch_size: int = IMAGE_BATCH_SIZE
) -> list[PassAnswer]:
    """One forward pass for several requests: every image once, every distinct text once."""
    texts = list(dict.fromkeys(text for work in works for text in work.texts or ()))
    FORWARD_PASS_IMAGES.observe(sum(work.image_count for work in works))
    with torch.inference_mode():
        image_embeddings = embed_pixels(
            cached, torch.cat([work.pixels for work in works]), batch_size=batch_size
        )
        text_embeddings = embed_texts(cached, texts) if texts else None
        text_rows = {text: row for row, text in enumerate(texts)}
        answers = []
        per_request = image_embeddings.split([work.image_count for work in works])
        for work, embeddings in zip(works, per_request, strict=True):
            if work.texts is None:
                answers.append(_label_answer(cached, embeddings))
            else:
                assert text_embeddings is not None
                rows = torch.tensor([text_rows[text] for text in work.texts])
                answers.append(_text_answer(cached, embeddings, text_embeddings[rows]))
        return answers


def embed(
    cached: CachedModel, pixels: torch.Tensor | None, texts: list[str] | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Unit-length embeddings of images and texts (`POST /embed`), on the model's thread."""

    def run() -> tuple[torch.Tensor | None, torch.Tensor | None]:
        with torch.inference_mode():
            images = embed_pixels(cached, pixels).cpu() if pixels is not None else None
            text = embed_texts(cached, texts).cpu() if texts else None
            return images, text

    with cached.lock:
        return cached.forward_thread.submit(run).result()


def embed_pixels(
    cached: CachedModel, pixels: torch.Tensor, *, batch_size: int = IMAGE_BATCH_SIZE
) -> torch.Tensor:
    """Unit-length float32 embeddings of uint8 pixels, `batch_size` images per forward."""
    # One normalise for the whole pass, on the model's device: the CPU only moved uint8 bytes.
    inputs = normalize(pixels.to(cached.device, non_blocking=True), cached.pixel_spec)
    clip = cached.loaded_clip.clip
    with cached.autocast():
        batches = [encode_images(clip, batch) for batch in inputs.split(batch_size)]
    return _unit_float32(torch.cat(batches))


def embed_texts(
    cached: CachedModel, texts: list[str], *, batch_size: int = TEXT_BATCH_SIZE
) -> torch.Tensor:
    """Unit-length float32 embeddings of texts, `batch_size` texts per forward."""
    loaded = cached.loaded_clip
    with cached.autocast():
        batches = [
            encode_texts(
                loaded.clip, loaded.tokenizer, texts[start : start + batch_size], cached.device
            )
            for start in range(0, len(texts), batch_size)
        ]
    return _unit_float32(torch.cat(batches))


def _unit_float32(embeddings: torch.Tensor) -> torch.Tensor:
    # Under bf16 the features come back in bf16, their norms off 1 by up to about 0.5%: scores
    # and softmax are computed in float32 on vectors normalised again in float32.
    return torch.nn.functional.normalize(embeddings.float(), dim=-1)


def _label_answer(cached: CachedModel, image_embeddings: torch.Tensor) -> PassAnswer:
    if cached.class_head is None:
        raise ValueError(f"model {cached.model_id} has no labels to classify with")
    # Calibrated: the temperature fitted on val (1 for models without one) never changes the
    # ranking, only how sure the probabilities say the model is.
    logits = cached.class_head(image_embeddings) / cached.temperature
    return PassAnswer(probabilities=logits.softmax(dim=-1).cpu())


def _text_answer(
    cached: CachedModel, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor
) -> PassAnswer:
    # Rounding can push unit-vector dot products a hair past 1.
    cosine = (image_embeddings @ text_embeddings.T).clamp(-1.0, 1.0)
    probabilities = (cached.logit_scale * cosine).softmax(dim=-1)
    return PassAnswer(probabilities=probabilities.cpu(), cosine=cosine.cpu())
