"""Trained models on a request's images: top-k over their labels, or similarity with texts.

One model, or an ensemble whose answer is the mean of its models' probabilities (soft voting)
and, with texts, of their cosine similarities too. The probabilities are calibrated (each
model's temperature, applied by the engine); each image's decision abstains below the
threshold (`abstain.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from app.core.errors import Unprocessable
from app.inference import engine, ensemble
from app.inference.cache import CachedModel
from app.ml.preprocess import PixelSpec
from app.predict import abstain
from app.predict.inputs import PredictInput
from app.predict.schemas import (
    ClassificationResponse,
    EnsembleClassificationResponse,
    EnsembleSimilarityResponse,
    LabelScorePublic,
    SimilarityResponse,
)
from app.predict.serving import ServedModel, Serving

TrainedResponse = (
    ClassificationResponse
    | EnsembleClassificationResponse
    | SimilarityResponse
    | EnsembleSimilarityResponse
)


def answer(*, serving: Serving, predict_input: PredictInput) -> TrainedResponse:
    """Classify the images over the models' labels, or compare them with the given texts."""
    served_models = serving.find_models(predict_input.model_ids)
    if predict_input.texts is None:
        check_can_classify(served_models)
    runs = _each_model(serving=serving, served_models=served_models, predict_input=predict_input)
    if predict_input.texts is not None:
        texts = predict_input.texts
        similarity = ensemble.average_similarities(
            [engine.compare(cached, pixels, texts) for cached, pixels in runs]
        )
        return _similarity_response(predict_input, similarity)
    answers, defaults = {}, []
    for cached, pixels in runs:
        answers[cached.model_id] = engine.label_probabilities(cached, pixels)
        defaults.append(cached.min_confidence)
    try:
        scores = ensemble.average_label_probabilities(answers)
    except ensemble.LabelMismatch as error:
        # Only when a model's files disagree with its row, which check_can_classify read.
        raise Unprocessable(str(error)) from None
    return _classification_response(
        predict_input,
        engine.top_labels(scores, top_k=predict_input.top_k),
        abstain.threshold(predict_input, defaults),
    )


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


def _each_model(
    *, serving: Serving, served_models: list[ServedModel], predict_input: PredictInput
) -> Iterator[tuple[CachedModel, torch.Tensor]]:
    """Each model in turn with the request's images preprocessed for it.

    Images are decoded once per distinct image processor, not once per model. One model at a
    time: a request holds no more than one loaded model besides the cache's, and each model's
    passes are still shared with whatever other requests wait for it.
    """
    pixels_by_spec: dict[PixelSpec, torch.Tensor] = {}
    for served in served_models:
        cached = serving.trained_model(served)
        spec = cached.pixel_spec
        if spec not in pixels_by_spec:
            pixels_by_spec[spec] = serving.pixels(
                predict_input.images, spec=spec, pending=predict_input.pending_pixels
            )
        yield cached, pixels_by_spec[spec]


def _classification_response(
    predict_input: PredictInput,
    ranked: list[list[engine.LabelScore]],
    min_confidence: float | None,
) -> ClassificationResponse | EnsembleClassificationResponse:
    predictions = public_predictions(ranked)
    decisions = abstain.decide(ranked, min_confidence)
    if predict_input.is_ensemble:
        return EnsembleClassificationResponse(
            model_ids=predict_input.model_ids,
            predictions=predictions,
            decisions=decisions,
            min_confidence=min_confidence,
        )
    return ClassificationResponse(
        model_id=predict_input.model_ids[0],
        predictions=predictions,
        decisions=decisions,
        min_confidence=min_confidence,
    )


def public_predictions(ranked: list[list[engine.LabelScore]]) -> list[list[LabelScorePublic]]:
    return [
        [LabelScorePublic(label=scored.label, score=scored.score) for scored in row]
        for row in ranked
    ]


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
