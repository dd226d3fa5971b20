"""The one typed configuration of a training run, saved next to every checkpoint.

It is the API's `Hyperparameters` (declared once, in `app.ml.hyperparameters`) plus what the
worker decides: where the data is, which device, and the speed options.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from app.ml.hyperparameters import LEGACY_METHOD, Hyperparameters


class TrainingConfig(Hyperparameters):
    # Not strict: its hyperparameters were checked strictly as a job's, and a saved config's
    # JSON spells its paths as strings.
    model_config = ConfigDict(extra="forbid", strict=False)

    base_model: str = Field(
        description="`tiny-clip`, a folder name under base_models_dir, or a hub id."
    )
    dataset_dir: Path = Field(description="A ready dataset folder holding manifest.json.")
    control_dataset_dir: Path | None = Field(
        None,
        description="A classification set whose zero-shot accuracy is measured before and "
        "after training, to show what the job cost.",
    )
    device: str = Field("auto", description="`auto`, `cpu`, `cuda`, `cuda:N`.")
    prepare_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Processes decoding images into the prepared array (once per dataset).",
    )
    progress_interval_seconds: float = Field(
        1.0,
        ge=0,
        description="How often the loop reads the loss, reports and asks about a cancel.",
    )
    compile_model: bool = Field(
        False, description="torch.compile both towers; slower first steps (see bench)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, more time."
    )
    distributed_timeout_seconds: float = Field(
        300.0, gt=0, description="A collective waits this long for every rank, then fails."
    )
    base_models_dir: Path | None = Field(None, description="Folder of local base models.")
    eval_batch_size: int = Field(128, ge=1, description="Images per evaluation batch.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    max_logit_scale: float = Field(
        100.0, gt=1, description="Upper clamp of the learnable temperature exp(t)."
    )

    @classmethod
    def for_job(cls, hyperparameters: dict[str, Any], **worker_fields: Any) -> TrainingConfig:
        """A job's stored hyperparameters (filled in and updated) plus the worker's fields."""
        # A job stored before `method` existed trained with `full`: it resumes with the same.
        resolved = Hyperparameters.model_validate({"method": LEGACY_METHOD, **hyperparameters})
        return cls(**dict(resolved), **worker_fields)

    def hyperparameters(self) -> Hyperparameters:
        return Hyperparameters(
            **{name: getattr(self, name) for name in Hyperparameters.model_fields}
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingConfig:
        """The config `to_json` wrote; an unknown or missing field is refused by name."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, item['loc'])) or 'config'}: {item['msg']}"
                for item in error.errors()
            )
            raise ValueError(f"TrainingConfig: {problems}") from None

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)
