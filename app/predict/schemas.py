"""What `/predict` accepts and answers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_TOP_K = 1000


class PredictOptions(BaseModel):
    """The fields a predict request carries besides its images (shared by JSON and multipart)."""

    # Extra fields are refused so that a typo such as `text` does not silently mean "classify".
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, description="The trained model to run.")
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


class PredictJsonRequest(PredictOptions):
    images: list[str] = Field(description="Images as base64 strings (a `data:` URL prefix is ok).")


class LabelScorePublic(BaseModel):
    label: str
    score: float


class ClassificationResponse(BaseModel):
    model_id: str
    predictions: list[list[LabelScorePublic]] = Field(
        description="Per image, the top-k labels with their probabilities, best first."
    )


class SimilarityResponse(BaseModel):
    model_id: str
    similarity: list[list[float]] = Field(description="Cosine similarity, images x texts.")
    probabilities: list[list[float]] = Field(description="Per image, softmax over the texts.")
