"""What `/predict` accepts and answers."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.ml.prompts import DEFAULT_PROMPT_TEMPLATE, PromptTemplates

MAX_TOP_K = 1000
# Models in one ensemble: each runs in turn on the request's images, so latency grows with it.
MAX_ENSEMBLE_MODELS = 8
MAX_ZERO_SHOT_LABELS = 1000


class PredictOptions(BaseModel):
    """The fields a predict request carries besides its images (shared by JSON and multipart)."""

    # Extra fields are refused so that a typo such as `text` does not silently mean "classify".
    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(
        None, min_length=1, description="The trained model to run; or send `model_ids`."
    )
    model_ids: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description=(
            f"In place of `model_id`: 2 to {MAX_ENSEMBLE_MODELS} distinct models run as an "
            "ensemble that averages their probabilities (soft voting). To classify they must "
            "have the same labels, in any order; with `texts` any models will do."
        ),
        json_schema_extra={"minItems": 2, "maxItems": MAX_ENSEMBLE_MODELS, "uniqueItems": True},
    )
    base_model: str | None = Field(
        None,
        min_length=1,
        description=(
            "In place of a trained model: a base model (`tiny-clip`, a local base model, or an "
            "allowed hub id) used zero-shot, with `labels` to classify over or `texts`."
        ),
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        description="With `base_model`: the classes to choose from (zero-shot).",
        json_schema_extra={"minItems": 2, "maxItems": MAX_ZERO_SHOT_LABELS, "uniqueItems": True},
    )
    prompt_templates: PromptTemplates | None = Field(
        None,
        description=(
            "With `labels`: prompts with `{}` where the label goes, averaged per label "
            f'(default `["{DEFAULT_PROMPT_TEMPLATE}"]`).'
        ),
    )
    texts: list[str] | None = Field(
        None,
        description="Texts to compare the images with; leave out to classify over the labels.",
    )
    top_k: int = Field(
        5,
        ge=1,
        le=MAX_TOP_K,
        description="How many labels to return per image (capped at the number of labels).",
    )
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=(
            "Classification: abstain below this top probability, answering that image's "
            'decision with `label: null` and `reason: "below threshold"` (its top-k still '
            "listed). Leave out for the model's default (chosen for its job's "
            "`target_precision`, if any); 0 keeps every answer."
        ),
    )

    @field_validator("model_ids")
    @classmethod
    def _an_ensemble_of_distinct_models(cls, model_ids: list[str] | None) -> list[str] | None:
        if model_ids is None:
            return None
        count = len(model_ids)
        if count < 2:
            raise PydanticCustomError(
                "too_short",
                "an ensemble needs at least 2 models, got {count}: send model_id for one model",
                {"count": count},
            )
        if count > MAX_ENSEMBLE_MODELS:
            raise PydanticCustomError(
                "too_long",
                "at most {limit} models in an ensemble, got {count}",
                {"limit": MAX_ENSEMBLE_MODELS, "count": count},
            )
        repeated = [
            model_id for model_id in dict.fromkeys(model_ids) if model_ids.count(model_id) > 1
        ]
        if repeated:
            raise PydanticCustomError(
                "repeated",
                "model_ids must be distinct: {repeated} named more than once",
                {"repeated": ", ".join(repeated)},
            )
        return model_ids

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is None:
            return None
        if not 2 <= len(labels) <= MAX_ZERO_SHOT_LABELS:
            raise PydanticCustomError(
                "labels_count",
                "send between 2 and {limit} labels, got {count}",
                {"limit": MAX_ZERO_SHOT_LABELS, "count": len(labels)},
            )
        if len(set(labels)) != len(labels):
            raise PydanticCustomError("repeated", "labels must be distinct", {})
        return labels

    @model_validator(mode="after")
    def _one_model_or_an_ensemble(self) -> Self:
        named = [self.model_id is not None, self.model_ids is not None, self.base_model is not None]
        if not any(named):
            raise _field_error(
                "model_id",
                "missing",
                "Field required: send model_id, model_ids for an ensemble, or base_model",
            )
        if sum(named) > 1:
            raise _field_error(
                "model_ids",
                "model_id_and_model_ids",
                "send one of model_id (one model), model_ids (an ensemble) or base_model "
                "(zero-shot)",
            )
        if self.base_model is None and (self.labels or self.prompt_templates):
            raise _field_error(
                "labels", "labels_without_base_model", "labels go with base_model (zero-shot)"
            )
        if self.base_model is not None and (self.labels is None) == (self.texts is None):
            raise _field_error(
                "labels",
                "labels_or_texts",
                "with base_model, send labels to classify over or texts to compare with "
                "(one of them)",
            )
        if self.min_confidence is not None and self.texts is not None:
            raise _field_error(
                "min_confidence",
                "min_confidence_with_texts",
                "min_confidence applies to classification: leave it out with texts",
            )
        if self.prompt_templates is not None and self.labels is None:
            raise _field_error(
                "prompt_templates", "templates_without_labels", "prompt_templates go with labels"
            )
        return self

    @property
    def requested_model_ids(self) -> list[str]:
        """The one model, or the ensemble's models, in the order the request named them."""
        if self.model_ids is not None:
            return self.model_ids
        return [self.model_id] if self.model_id is not None else []


def _field_error(field: str, error_type: str, message: str) -> ValidationError:
    # A model validator's own errors are located at the body; this one names the field.
    detail = InitErrorDetails(
        type=PydanticCustomError(error_type, message), loc=(field,), input=None
    )
    return ValidationError.from_exception_data(PredictOptions.__name__, [detail])


class PredictJsonRequest(PredictOptions):
    images: list[str] = Field(description="Images as base64 strings (a `data:` URL prefix is ok).")


class LabelScorePublic(BaseModel):
    label: str
    score: float


BELOW_THRESHOLD = "below threshold"


class DecisionPublic(BaseModel):
    """One image's answer once the abstain threshold is applied."""

    label: str | None = Field(
        description="The top label, or null when its probability is below `min_confidence`."
    )
    score: float = Field(description="The top label's probability.")
    reason: str | None = Field(
        None, description=f'Why there is no label: "{BELOW_THRESHOLD}"; null with a label.'
    )


Decisions = Annotated[
    list[DecisionPublic],
    Field(
        description=(
            "Per image, the top label, or `label: null` with a reason when its probability is "
            "below `min_confidence`; `predictions` still holds its top-k."
        )
    ),
]
MinConfidence = Annotated[
    float | None,
    Field(
        description=(
            "The abstain threshold applied: the request's, else the model's default; null when "
            "none (every image gets its top label)."
        )
    ),
]
Predictions = Annotated[
    list[list[LabelScorePublic]],
    Field(
        description=(
            "Per image, the top-k labels with their probabilities, best first; for an ensemble "
            "each probability is the mean of its models' probabilities for that label."
        )
    ),
]
CosineMatrix = Annotated[
    list[list[float]],
    Field(
        description=(
            "Cosine similarity, images x texts; for an ensemble, the mean of its models' cosines."
        )
    ),
]
TextProbabilities = Annotated[
    list[list[float]],
    Field(
        description=(
            "Per image, softmax over the texts; for an ensemble, the mean of its models' softmax."
        )
    ),
]
EnsembleIds = Annotated[list[str], Field(description="The ensemble's models, as requested.")]


class ClassificationResponse(BaseModel):
    model_id: str
    predictions: Predictions
    decisions: Decisions
    min_confidence: MinConfidence


class EnsembleClassificationResponse(BaseModel):
    model_ids: EnsembleIds
    predictions: Predictions
    decisions: Decisions
    min_confidence: MinConfidence


class SimilarityResponse(BaseModel):
    model_id: str
    similarity: CosineMatrix
    probabilities: TextProbabilities


class EnsembleSimilarityResponse(BaseModel):
    model_ids: EnsembleIds
    similarity: CosineMatrix
    probabilities: TextProbabilities


class ZeroShotClassificationResponse(BaseModel):
    base_model: str
    predictions: Predictions
    decisions: Decisions
    min_confidence: MinConfidence


class ZeroShotSimilarityResponse(BaseModel):
    base_model: str
    similarity: CosineMatrix
    probabilities: TextProbabilities


PredictResponse = (
    ClassificationResponse
    | EnsembleClassificationResponse
    | SimilarityResponse
    | EnsembleSimilarityResponse
    | ZeroShotClassificationResponse
    | ZeroShotSimilarityResponse
)


class EmbedRequest(BaseModel):
    """Images and/or texts to embed with a trained model or a base model."""

    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(None, min_length=1, description="A trained model.")
    base_model: str | None = Field(None, min_length=1, description="Or a base model.")
    images: list[str] = Field(
        default_factory=list, description="Images as base64 strings (a `data:` URL prefix is ok)."
    )
    texts: list[str] = Field(default_factory=list, description="Texts to embed.")

    @model_validator(mode="after")
    def _one_model_and_something_to_embed(self) -> Self:
        if (self.model_id is None) == (self.base_model is None):
            raise _field_error("model_id", "one_model", "send one of model_id or base_model")
        if not self.images and not self.texts:
            raise _field_error("images", "nothing_to_embed", "send images, texts or both")
        return self


class EmbedResponse(BaseModel):
    model_id: str | None = None
    base_model: str | None = None
    dimension: int = Field(description="The length of every vector.")
    image_embeddings: list[list[float]] = Field(
        description="One unit-length vector per image, in request order."
    )
    text_embeddings: list[list[float]] = Field(
        description="One unit-length vector per text, in the same space as the images'."
    )


# How the routes document their bodies, which they read themselves (JSON or multipart).
_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "model_id": {"type": "string", "description": "The trained model to run; or `model_ids`."},
        "model_ids": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": MAX_ENSEMBLE_MODELS,
            "description": (
                "In place of `model_id`, an ensemble (soft voting): repeat the field once per "
                "model, or send one JSON array of strings."
            ),
        },
        "base_model": {
            "type": "string",
            "description": "In place of a trained model: a base model used zero-shot.",
        },
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With base_model: the classes (repeat the field, or a JSON array).",
        },
        "prompt_templates": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With labels: prompts with {} for the label (repeat, or a JSON array).",
        },
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "texts": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Repeat the field once per text, or send one JSON array of strings.",
        },
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
        "min_confidence": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "Abstain below this top probability (label null); default: the "
            "model's own.",
        },
    },
}
PREDICT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictJsonRequest.model_json_schema()},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}
EMBED_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbedRequest.model_json_schema()}},
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No model with this id (the message names every unknown id)."},
    409: {"description": "The model is registered but its files are missing or do not load."},
    413: {"description": "Too many images or texts, or an image or the body is too large."},
    415: {"description": "The body is neither JSON nor multipart/form-data."},
    422: {"description": "Bad input: the message names the field, image index or file."},
}
