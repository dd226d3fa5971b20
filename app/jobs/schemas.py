"""Pydantic models of the jobs API: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.jobs.status import JobStatus
from app.ml.hyperparameters import Hyperparameters
from app.webhooks.event_types import JOB_EVENTS, WebhookEvent
from app.webhooks.schemas import MAX_URL_CHARS, WebhookCreated


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
    webhook_url: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL sent this job's end (signed, like `/webhooks`' deliveries); "
        "the answer's `webhook` holds its secret.",
    )
    webhook_events: list[WebhookEvent] | None = Field(
        None,
        min_length=1,
        max_length=len(JOB_EVENTS),
        description="Which of job.succeeded, job.failed and job.cancelled it is sent "
        "(default: all three).",
    )

    @model_validator(mode="after")
    def _webhook_events_need_a_job_webhook(self) -> JobCreate:
        if self.webhook_events is not None:
            if self.webhook_url is None:
                raise ValueError("webhook_events needs webhook_url")
            other = [str(event) for event in self.webhook_events if event not in JOB_EVENTS]
            if other:
                raise ValueError(
                    f"webhook_events: a job's webhook hears only job events, not {other[0]}"
                )
        return self


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
    loss_curve: list[tuple[int, float]] = Field(
        default_factory=list,
        description="The training loss by step, [step, loss], thinned evenly to at most "
        "400 points however long the run; the newest loss is the last point.",
    )
    model_id: str | None
    error: str | None
    attempt: int
    max_attempts: int
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @field_validator("loss_curve", mode="before")
    @classmethod
    def _points_of_stored_curve(cls, stored: Any) -> Any:
        # Stored with its bucket stride (app/jobs/loss_curve.py); clients need the points.
        if stored is None:
            return []
        if isinstance(stored, dict):
            return stored.get("points", [])
        return stored


class JobCreated(JobPublic):
    webhook: WebhookCreated | None = Field(
        None,
        description="Only when `webhook_url` was given: the job's webhook with its secret, "
        "shown only now (`GET /webhooks/{id}` shows the rest later).",
    )


class JobList(BaseModel):
    items: list[JobPublic]
    total: int


class JobEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    created_at: datetime
    type: str
    message: str
    data: dict[str, Any]
