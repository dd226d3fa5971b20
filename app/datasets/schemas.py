"""What the datasets API sends back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


UploadStatus = Literal["receiving", "completing", "completed"]


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(gt=0, description="The zip's size in bytes: the upload ends there.")
    name: str | None = Field(None, max_length=200, description="The dataset's name.")
    filename: str | None = Field(
        None, max_length=1000, description="The zip's file name (names the dataset by default)."
    )


class UploadPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    size: int
    received: int = Field(description="Bytes stored so far: the next chunk's Upload-Offset.")
    status: UploadStatus
    name: str | None
    filename: str | None
    chunk_max_bytes: int = Field(description="The largest chunk one request may carry.")
    dataset_id: str | None = Field(description="The dataset it became, once completed.")
    created_at: datetime
    updated_at: datetime
