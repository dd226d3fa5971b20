"""Pydantic models of the jobs API: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import datetime
from string import Formatter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class Hyperparameters(BaseModel):
    """Every field has a default and a checked range; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(32, ge=1, le=4096, description="Images per optimisation step.")
    learning_rate: float = Field(1e-5, gt=0, le=1.0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.1, ge=0, le=1.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, le=0.5, description="Share of steps warming up.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds shuffling and augmentation.")
    prompt_template: str = Field(
        "a photo of a {}.",
        min_length=2,
        max_length=200,
        description="Class prompt for classification sets; `{}` becomes the class name.",
    )
    augment: bool = Field(True, description="Random resized crops and flips while training.")

    @field_validator("prompt_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        try:
            fields = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
        except ValueError as error:
            raise ValueError(f"prompt_template is not a valid template: {error}") from None
        if fields != [""]:
            raise ValueError("prompt_template must contain exactly one '{}' placeholder")
        return template


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    base_model: str = Field(
        min_length=1,
        max_length=300,
        description="`tiny-clip`, a folder under CLIPFT_BASE_MODELS_DIR, or a hub id.",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    name: str | None = Field(None, min_length=1, max_length=200)


class JobProgress(BaseModel):
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int | None = None
    fraction: float = 0.0
    eta_seconds: float | None = None
    samples_per_second: float | None = None


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: JobStatus
    dataset_id: str
    base_model: str
    hyperparameters: dict[str, Any]
    progress: JobProgress
    metrics: dict[str, Any]
    model_id: str | None
    error: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    items: list[JobPublic]
    total: int


class JobEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    created_at: datetime
    type: str
    message: str
    data: dict[str, Any]
