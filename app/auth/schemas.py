"""What the usage API answers: the bytes one tenant keeps on the server, by kind."""

from __future__ import annotations

from pydantic import BaseModel, Field


class UsagePublic(BaseModel):
    tenant: str
    datasets_bytes: int = Field(description="The datasets' stored images and manifests.")
    prepared_bytes: int = Field(
        description="The datasets' prepared arrays (one per input resolution trained at)."
    )
    models_bytes: int = Field(description="The registered models' folders.")
    checkpoints_bytes: int = Field(description="The jobs' checkpoints not yet removed.")
    uploads_in_progress_bytes: int = Field(description="What uploads in progress reserved.")
    total_bytes: int = Field(description="All of the above: what the stored-bytes quota counts.")
    max_stored_bytes: int | None = Field(
        description="The tenant's stored-bytes quota (null: none; admins are not held to it)."
    )
    max_upload_bytes: int | None = Field(
        description="The tenant's upload quota, counting datasets and uploads in progress."
    )
