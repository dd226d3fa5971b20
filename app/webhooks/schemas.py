"""Pydantic models of the webhooks API: what a client sends and what it gets back."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.webhooks.event_types import WebhookEvent

MAX_URL_CHARS = 2000  # the width of `webhook.url`
DeliveryStatus = Literal["pending", "sending", "delivered", "failed"]


def _unique(events: list[WebhookEvent]) -> list[WebhookEvent]:
    return list(dict.fromkeys(events))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="An http(s) URL on a public address, sent a POST for each event.",
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WebhookEvent),
        min_length=1,
        max_length=len(WebhookEvent),
        description="The event types it is sent (default: all of them).",
    )
    description: str = Field("", max_length=200)

    _unique_events = field_validator("events")(_unique)


class WebhookPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[WebhookEvent]
    description: str
    job_id: str | None = Field(
        description="Set for a webhook given on `POST /jobs`: it hears only that job."
    )
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The key of its `Clipft-Signature` header. Shown only now: store it."
    )


class WebhookList(BaseModel):
    items: list[WebhookPublic]
    total: int


class AttemptPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None = Field(description="The receiver's answer; null if none came.")
    error: str | None = Field(description="Why the attempt did not count as accepted.")


class DeliveryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="The body's `id`: the same on every attempt.")
    webhook_id: str
    type: WebhookEvent
    subject_id: str = Field(description="The job's or dataset's id.")
    status: DeliveryStatus = Field(
        description="`pending` (its next attempt is due at `next_attempt_at`), `sending`, "
        "`delivered` (a 2xx answer), or `failed` (not accepted within "
        "CLIPFT_WEBHOOK_RETRY_HOURS)."
    )
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptPublic] = Field(description="Every attempt, oldest first.")


class DeliveryList(BaseModel):
    items: list[DeliveryPublic]
    total: int
