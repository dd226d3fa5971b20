"""What the datasets API sends back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from app.ml.manifest import DatasetKind

DatasetStatus = Literal["validating", "ready", "failed"]


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: DatasetStatus
    kind: DatasetKind
    num_images: int
    num_train: int
    num_val: int
    classes: list[str]
    errors: list[dict[str, Any]]
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetPublic]
    total: int
