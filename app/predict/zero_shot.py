"""A base model with no fine-tuning: classify over the request's labels, or compare with texts."""

from __future__ import annotations

from app.inference import engine
from app.inference.cache import with_labels
from app.ml.prompts import DEFAULT_PROMPT_TEMPLATE
from app.predict import abstain
from app.predict.inputs import PredictInput
from app.predict.schemas import (
    LabelScorePublic,
    ZeroShotClassificationResponse,
    ZeroShotSimilarityResponse,
)
from app.predict.serving import Serving


def answer(
    *, serving: Serving, predict_input: PredictInput
) -> ZeroShotClassificationResponse | ZeroShotSimilarityResponse:
    """Top-k over the labels (each embedded through the prompt templates), or similarity."""
    name = predict_input.base_model
    assert name is not None
    cached = serving.base_model(name)
    pixels = serving.pixels(
        predict_input.images, spec=cached.pixel_spec, pending=predict_input.pending_pixels
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
        predict_input.prompt_templates or [DEFAULT_PROMPT_TEMPLATE],
    )
    ranked = engine.top_labels(
        engine.label_probabilities(labelled, pixels), top_k=predict_input.top_k
    )
    min_confidence = abstain.threshold(predict_input, [])
    return ZeroShotClassificationResponse(
        base_model=name,
        predictions=[
            [LabelScorePublic(label=scored.label, score=scored.score) for scored in row]
            for row in ranked
        ],
        decisions=abstain.decide(ranked, min_confidence),
        min_confidence=min_confidence,
    )
