"""Pydantic models of the jobs API: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.lifecycle import JobStatus
from app.ml.hyperparameters import Hyperparameters


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64)
    base_model: str = Field(
        min_length=1,
        max_length=300,
        description="`tiny-clip`, a folder under CLIPFT_BASE_MODELS_DIR, or a hub id.",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    control_dataset_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="A ready classification dataset the job does not train on: its zero-shot "
        "accuracy before and after goes into the job's report, to show what the job cost.",
    )
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
    control_dataset_id: str | None
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
