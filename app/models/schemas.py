"""What the models API answers: one trained model, and a page of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ModelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    job_id: str
    base_model: str
    kind: str
    labels: list[str]
    prompt_template: str
    metrics: dict[str, Any]
    created_at: datetime


class ModelList(BaseModel):
    items: list[ModelPublic]
    total: int
