"""Run predictions: check the request, find the model, prepare its images, classify or compare.

The database is only read at the start, in a session of its own that is closed (and its pooled
connection returned) before any image is decoded or the model runs.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from pathlib import Path

import torch

from app.core.config import Settings
from app.core.db import session_scope
from app.core.errors import Conflict, PayloadTooLarge, Unprocessable
from app.inference import engine
from app.inference.cache import CachedModel, ModelCache, ModelUnavailable
from app.inference.pixels import BadImage, PixelPool
from app.ml.images import ImageLimits
from app.models.service import get_model
from app.predict.schemas import ClassificationResponse, LabelScorePublic, SimilarityResponse


@dataclass(frozen=True)
class ImageUpload:
    # How error messages name the image: `images[2]` (JSON) or `file 'cat.png'` (multipart).
    name: str
    payload: bytes


@dataclass(frozen=True)
class PredictInput:
    model_id: str
    images: list[ImageUpload]
    texts: list[str] | None
    top_k: int


def check_request(*, num_images: int, texts: list[str] | None, settings: Settings) -> None:
    """Refuse no images, too many images or texts, and empty texts, before any decoding."""
    if num_images == 0:
        raise Unprocessable(
            "no images: send at least one (`images` in JSON, `files` in multipart/form-data)"
        )
    if num_images > settings.predict_max_images:
        raise PayloadTooLarge(
            f"too many images: at most {settings.predict_max_images} per request, got {num_images}"
        )
    if texts is None:
        return
    if not texts:
        raise Unprocessable(
            "texts is empty: send at least one text, or leave texts out to classify over the "
            "model's labels"
        )
    if len(texts) > settings.predict_max_texts:
        raise PayloadTooLarge(
            f"too many texts: at most {settings.predict_max_texts} per request, got {len(texts)}"
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise Unprocessable(f"texts[{index}] is empty")


def check_image_size(*, name: str, size: int, max_bytes: int) -> None:
    """Refuse an image over the per-image byte limit with a 413 that names it."""
    if size > max_bytes:
        raise PayloadTooLarge(f"{name} is {size} bytes, over the limit of {max_bytes}")


def decode_base64_images(*, images: list[str]) -> list[ImageUpload]:
    """Decode JSON's base64 images (a `data:` URL prefix is allowed), naming any bad one."""
    return [
        ImageUpload(name=f"images[{index}]", payload=_decode_base64(text, name=f"images[{index}]"))
        for index, text in enumerate(images)
    ]


def _decode_base64(text: str, *, name: str) -> bytes:
    if text.startswith("data:"):
        # A data URL (`data:image/png;base64,...`): the payload follows the first comma.
        text = text.partition(",")[2]
    try:
        encoded = text.encode("ascii")
        try:
            return binascii.a2b_base64(encoded, strict_mode=True)
        except binascii.Error:
            # Line breaks are common in wrapped base64; any other stray character is an error.
            # Stripped only on this second try: scanning every payload for them costs as much
            # as decoding it.
            return binascii.a2b_base64(b"".join(encoded.split()), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Unprocessable(f"{name} is not valid base64") from None


@dataclass(frozen=True)
class ServedModel:
    """What serving needs of a model's row, read before the session closes."""

    id: str
    path: str


def find_model(*, settings: Settings, model_id: str) -> ServedModel:
    """The model's id and folder, read in a short session of its own; `NotFound` if none."""
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        model_record = get_model(session=session, model_id=model_id)
        return ServedModel(id=model_record.id, path=model_record.path)


def prepare_images(
    *, uploads: list[ImageUpload], cached: CachedModel, pixel_pool: PixelPool, settings: Settings
) -> torch.Tensor:
    """Decode and preprocess every image in parallel; a 422 names the first that does not decode."""
    max_bytes = settings.predict_max_image_bytes
    for upload in uploads:
        check_image_size(name=upload.name, size=len(upload.payload), max_bytes=max_bytes)
    limits = ImageLimits(max_pixels=settings.max_image_pixels, max_bytes=max_bytes)
    try:
        return pixel_pool.batch(
            [upload.payload for upload in uploads], limits=limits, spec=cached.pixel_spec
        )
    except BadImage as error:
        raise Unprocessable(f"{uploads[error.index].name}: {error.reason}") from None


def predict(
    *,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    settings: Settings,
    predict_input: PredictInput,
) -> ClassificationResponse | SimilarityResponse:
    """Classify the images over the model's labels, or compare them with the given texts."""
    served = find_model(settings=settings, model_id=predict_input.model_id)
    cached = _serving_model(model_cache=model_cache, served=served, data_dir=settings.data_dir)
    if predict_input.texts is None and cached.label_embeddings is None:
        raise Unprocessable(
            f"model {served.id} is a {cached.metadata.kind} model with no labels to "
            "classify over: send `texts` to compare the images with"
        )
    pixels = prepare_images(
        uploads=predict_input.images, cached=cached, pixel_pool=pixel_pool, settings=settings
    )
    if predict_input.texts is not None:
        similarity = engine.compare(cached, pixels, predict_input.texts)
        return SimilarityResponse(
            model_id=served.id,
            similarity=similarity.cosine.tolist(),
            probabilities=similarity.probabilities.tolist(),
        )
    predictions = engine.classify(cached, pixels, top_k=predict_input.top_k)
    return ClassificationResponse(
        model_id=served.id,
        predictions=[
            [LabelScorePublic(label=scored.label, score=scored.score) for scored in row]
            for row in predictions
        ],
    )


def _serving_model(*, model_cache: ModelCache, served: ServedModel, data_dir: Path) -> CachedModel:
    try:
        return model_cache.get(served.id, data_dir / served.path)
    except ModelUnavailable as error:
        raise Conflict(f"model {served.id} cannot be served: {error} ({served.path})") from error
