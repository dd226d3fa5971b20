"""Abstaining: below a confidence threshold an image gets no label, only its top-k.

The threshold is the request's `min_confidence`, else the model's default (chosen after
training for its job's `target_precision`, kept in `clipft.json`). An ensemble has no default:
each model's was chosen for that model alone, not for the average of several.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.inference.engine import LabelScore
from app.predict.inputs import PredictInput
from app.predict.schemas import BELOW_THRESHOLD, DecisionPublic


def threshold(predict_input: PredictInput, model_defaults: Sequence[float | None]) -> float | None:
    """The request's threshold, else the one model's default; None when there is neither."""
    if predict_input.min_confidence is not None:
        return predict_input.min_confidence
    if len(model_defaults) == 1:
        return model_defaults[0]
    return None


def decide(ranked: list[list[LabelScore]], min_confidence: float | None) -> list[DecisionPublic]:
    """Each image's top label, or no label with the reason when it is below the threshold."""
    decisions = []
    for row in ranked:
        top = row[0]
        if min_confidence is not None and top.score < min_confidence:
            decisions.append(DecisionPublic(label=None, score=top.score, reason=BELOW_THRESHOLD))
        else:
            decisions.append(DecisionPublic(label=top.label, score=top.score))
    return decisions
