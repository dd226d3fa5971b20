"""Run predictions: check the request, find the model, prepare its images, classify or compare.

The database is only read at the start, in a session of its own that is closed (and its pooled
connection returned) before any image is decoded or the model runs.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from app.auth.keys import Principal
from app.core.config import Settings
from app.core.db import session_scope
from app.core.errors import Conflict, PayloadTooLarge, Unprocessable
from app.inference import engine, ensemble
from app.inference.cache import CachedModel, ModelCache, ModelUnavailable, with_labels
from app.inference.pixels import BadImage, PendingPixels, PixelPool, gather
from app.ml.base_models import BaseModelRefused, check_base_model
from app.ml.images import ImageLimits
from app.ml.preprocess import PixelSpec
from app.models.service import get_models
from app.predict.model_lookup import ModelLookup
from app.predict.schemas import (
    DEFAULT_ZERO_SHOT_TEMPLATE,
    ClassificationResponse,
    EmbedRequest,
    EmbedResponse,
    EnsembleClassificationResponse,
    EnsembleSimilarityResponse,
    LabelScorePublic,
    PredictResponse,
    SimilarityResponse,
    ZeroShotClassificationResponse,
    ZeroShotSimilarityResponse,
)


@dataclass(frozen=True)
class ImageUpload:
    # How error messages name the image: `images[2]` (JSON) or `file 'cat.png'` (multipart).
    name: str
    payload: bytes


@dataclass(frozen=True)
class PredictInput:
    # One model, or two or more whose answers are averaged (an ensemble).
    model_ids: list[str]
    images: list[ImageUpload]
    texts: list[str] | None
    top_k: int
    # Zero-shot: a base model in place of trained ones, with the labels to classify over.
    base_model: str | None = None
    labels: list[str] | None = None
    prompt_templates: list[str] | None = None
    # Images already decoding for one model's pixel spec while the body arrived (multipart).
    pending_pixels: PendingPixels | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.model_ids) > 1


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
    check_texts(texts, settings)


def check_texts(texts: list[str], settings: Settings) -> None:
    """Refuse too many texts, empty ones and long ones, before any is tokenized."""
    if len(texts) > settings.predict_max_texts:
        raise PayloadTooLarge(
            f"too many texts: at most {settings.predict_max_texts} per request, got {len(texts)}"
        )
    limit = settings.predict_max_text_chars
    for index, text in enumerate(texts):
        if len(text) > limit:
            raise Unprocessable(
                f"texts[{index}] is {len(text)} characters, over the limit of {limit} "
                "(CLIP reads only its first 77 tokens)"
            )
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
    kind: str
    labels: list[str]


def find_models(
    *,
    settings: Settings,
    model_ids: list[str],
    principal: Principal,
    lookup: ModelLookup[ServedModel],
) -> list[ServedModel]:
    """The models' rows, in order: remembered by `lookup`, or read in a short session of their
    own; `NotFound` if any is unknown (or another tenant's)."""

    def read(ids: list[str]) -> list[ServedModel]:
        with session_scope(settings.resolved_database_url, settings.database_pool) as session:
            return [
                ServedModel(
                    id=model_record.id,
                    path=model_record.path,
                    kind=model_record.kind,
                    labels=list(model_record.labels),
                )
                for model_record in get_models(session=session, model_ids=ids, principal=principal)
            ]

    return lookup.find(model_ids, principal, read)


def check_can_classify(served_models: list[ServedModel]) -> None:
    """Refuse models with no labels, and an ensemble whose models' labels differ, with a 422."""
    unlabelled = [served for served in served_models if not served.labels]
    if len(served_models) == 1 and unlabelled:
        raise Unprocessable(
            f"model {unlabelled[0].id} is a {unlabelled[0].kind} model with no labels to "
            "classify over: send `texts` to compare the images with"
        )
    if unlabelled:
        named = ", ".join(f"{served.id} ({served.kind})" for served in unlabelled)
        raise Unprocessable(
            f"models with no labels to classify over cannot join an ensemble: {named}; leave "
            "them out, or send `texts` to compare the images with"
        )
    differences = ensemble.label_differences({served.id: served.labels for served in served_models})
    if differences is not None:
        raise Unprocessable(differences)


def image_limits(settings: Settings) -> ImageLimits:
    """What a /predict image may be: its pixels and its bytes."""
    return ImageLimits(
        max_pixels=settings.max_image_pixels, max_bytes=settings.predict_max_image_bytes
    )


def prepare_images(
    *,
    uploads: list[ImageUpload],
    spec: PixelSpec,
    pixel_pool: PixelPool,
    settings: Settings,
    pending: PendingPixels | None = None,
) -> torch.Tensor:
    """Decode and preprocess every image in parallel, or collect those already decoding for
    `spec`; a 422 names the first that does not decode."""
    for upload in uploads:
        check_image_size(
            name=upload.name, size=len(upload.payload), max_bytes=settings.predict_max_image_bytes
        )
    try:
        if pending is not None and pending.spec == spec and len(pending.futures) == len(uploads):
            return gather(pending.futures)
        return pixel_pool.batch(
            [upload.payload for upload in uploads], limits=image_limits(settings), spec=spec
        )
    except BadImage as error:
        raise Unprocessable(f"{uploads[error.index].name}: {error.reason}") from None


def predict(
    *,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    settings: Settings,
    predict_input: PredictInput,
    principal: Principal,
    model_lookup: ModelLookup[ServedModel],
) -> PredictResponse:
    """Classify the images over the labels, or compare them with the given texts; an ensemble
    answers the mean of its models' probabilities (and cosines)."""
    if predict_input.base_model is not None:
        return zero_shot(
            model_cache=model_cache,
            pixel_pool=pixel_pool,
            settings=settings,
            predict_input=predict_input,
        )
    served_models = find_models(
        settings=settings,
        model_ids=predict_input.model_ids,
        principal=principal,
        lookup=model_lookup,
    )
    if predict_input.texts is None:
        check_can_classify(served_models)
    runs = _each_model(
        served_models=served_models,
        predict_input=predict_input,
        model_cache=model_cache,
        pixel_pool=pixel_pool,
        settings=settings,
    )
    if predict_input.texts is not None:
        texts = predict_input.texts
        similarity = ensemble.average_similarities(
            [engine.compare(cached, pixels, texts) for cached, pixels in runs]
        )
        return _similarity_response(predict_input, similarity)
    answers = {
        cached.model_id: engine.label_probabilities(cached, pixels) for cached, pixels in runs
    }
    try:
        scores = ensemble.average_label_probabilities(answers)
    except ensemble.LabelMismatch as error:
        # Only when a model's files disagree with its row, which check_can_classify read.
        raise Unprocessable(str(error)) from None
    return _classification_response(
        predict_input, engine.top_labels(scores, top_k=predict_input.top_k)
    )


def _each_model(
    *,
    served_models: list[ServedModel],
    predict_input: PredictInput,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    settings: Settings,
) -> Iterator[tuple[CachedModel, torch.Tensor]]:
    """Each model in turn with the request's images preprocessed for it.

    Images are decoded once per distinct image processor, not once per model. One model at a
    time: a request holds no more than one loaded model besides the cache's, and each model's
    passes are still shared with whatever other requests wait for it.
    """
    pixels_by_spec: dict[PixelSpec, torch.Tensor] = {}
    for served in served_models:
        cached = _serving_model(model_cache=model_cache, served=served, data_dir=settings.data_dir)
        spec = cached.pixel_spec
        if spec not in pixels_by_spec:
            pixels_by_spec[spec] = prepare_images(
                uploads=predict_input.images,
                spec=spec,
                pixel_pool=pixel_pool,
                settings=settings,
                pending=predict_input.pending_pixels,
            )
        yield cached, pixels_by_spec[spec]


def _classification_response(
    predict_input: PredictInput, ranked: list[list[engine.LabelScore]]
) -> ClassificationResponse | EnsembleClassificationResponse:
    predictions = [
        [LabelScorePublic(label=scored.label, score=scored.score) for scored in row]
        for row in ranked
    ]
    if predict_input.is_ensemble:
        return EnsembleClassificationResponse(
            model_ids=predict_input.model_ids, predictions=predictions
        )
    return ClassificationResponse(model_id=predict_input.model_ids[0], predictions=predictions)


def _similarity_response(
    predict_input: PredictInput, similarity: engine.Similarity
) -> SimilarityResponse | EnsembleSimilarityResponse:
    cosine, probabilities = similarity.cosine.tolist(), similarity.probabilities.tolist()
    if predict_input.is_ensemble:
        return EnsembleSimilarityResponse(
            model_ids=predict_input.model_ids, similarity=cosine, probabilities=probabilities
        )
    return SimilarityResponse(
        model_id=predict_input.model_ids[0], similarity=cosine, probabilities=probabilities
    )


def _serving_model(*, model_cache: ModelCache, served: ServedModel, data_dir: Path) -> CachedModel:
    try:
        return model_cache.get(served.id, data_dir / served.path)
    except ModelUnavailable as error:
        raise Conflict(f"model {served.id} cannot be served: {error} ({served.path})") from error


def zero_shot(
    *,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    settings: Settings,
    predict_input: PredictInput,
) -> ZeroShotClassificationResponse | ZeroShotSimilarityResponse:
    """A base model, no fine-tuning: classify over the request's labels, or compare with texts."""
    name = predict_input.base_model
    assert name is not None
    cached = serving_base_model(model_cache=model_cache, settings=settings, name=name)
    pixels = prepare_images(
        uploads=predict_input.images,
        spec=cached.pixel_spec,
        pixel_pool=pixel_pool,
        settings=settings,
        pending=predict_input.pending_pixels,
    )
    if predict_input.texts is not None:
        similarity = engine.compare(cached, pixels, predict_input.texts)
        return ZeroShotSimilarityResponse(
            base_model=name,
            similarity=similarity.cosine.tolist(),
            probabilities=similarity.probabilities.tolist(),
        )
    assert predict_input.labels is not None
    labelled = with_labels(
        cached,
        predict_input.labels,
        predict_input.prompt_templates or [DEFAULT_ZERO_SHOT_TEMPLATE],
    )
    ranked = engine.top_labels(
        engine.label_probabilities(labelled, pixels), top_k=predict_input.top_k
    )
    return ZeroShotClassificationResponse(
        base_model=name,
        predictions=[
            [LabelScorePublic(label=scored.label, score=scored.score) for scored in row]
            for row in ranked
        ],
    )


def serving_base_model(*, model_cache: ModelCache, settings: Settings, name: str) -> CachedModel:
    """A base model loaded for serving, if it is one this server may load (else 422 / 409)."""
    try:
        check_base_model(name, settings.base_models_dir, settings.hub_model_allowed)
    except BaseModelRefused as error:
        raise Unprocessable(f"base_model: {error}") from None
    try:
        return model_cache.get_base(name, settings.base_models_dir)
    except ModelUnavailable as error:
        raise Conflict(f"base model {name} cannot be served: {error}") from error


def embed(
    *,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    settings: Settings,
    request: EmbedRequest,
    principal: Principal,
    model_lookup: ModelLookup[ServedModel],
) -> EmbedResponse:
    """Unit-length image and text vectors from a trained model or a base model."""
    if len(request.images) > settings.predict_max_images:
        raise PayloadTooLarge(
            f"too many images: at most {settings.predict_max_images} per request, "
            f"got {len(request.images)}"
        )
    check_texts(request.texts, settings)
    if request.model_id is not None:
        served = find_models(
            settings=settings,
            model_ids=[request.model_id],
            principal=principal,
            lookup=model_lookup,
        )
        cached = _serving_model(
            model_cache=model_cache, served=served[0], data_dir=settings.data_dir
        )
    else:
        assert request.base_model is not None
        cached = serving_base_model(
            model_cache=model_cache, settings=settings, name=request.base_model
        )
    pixels = (
        prepare_images(
            uploads=decode_base64_images(images=request.images),
            spec=cached.pixel_spec,
            pixel_pool=pixel_pool,
            settings=settings,
        )
        if request.images
        else None
    )
    images, texts = engine.embed(cached, pixels, request.texts or None)
    dimension = int((images if images is not None else texts).shape[1])  # type: ignore[union-attr]
    return EmbedResponse(
        model_id=request.model_id,
        base_model=request.base_model,
        dimension=dimension,
        image_embeddings=images.tolist() if images is not None else [],
        text_embeddings=texts.tolist() if texts is not None else [],
    )
