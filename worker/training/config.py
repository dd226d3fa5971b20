"""The one typed configuration of a training run, saved next to every checkpoint."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from worker.training.jsonable import from_json_dict, to_json_dict


@dataclass
class TrainingConfig:
    base_model: str = field(
        metadata={"help": "`tiny-clip`, a folder name under base_models_dir, or a hub id."}
    )
    dataset_dir: Path = field(metadata={"help": "A ready dataset folder holding manifest.json."})
    epochs: int = field(default=10, metadata={"help": "Passes over the training split."})
    batch_size: int = field(default=32, metadata={"help": "Images per optimisation step."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW decay; never applied to biases, norms, temperature."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Share of all steps spent warming the rate up linearly."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds shuffling, augmentation and init."})
    prompt_template: str = field(
        default="a photo of a {}.",
        metadata={"help": "Class prompt; `{}` is replaced by the class name."},
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_logit_scale: float = field(
        default=100.0, metadata={"help": "Upper clamp of the learnable temperature exp(t)."}
    )
    augment: bool = field(
        default=True, metadata={"help": "Random resized crop and flip, on the device, per batch."}
    )
    device: str = field(default="auto", metadata={"help": "`auto`, `cpu`, `cuda`, `cuda:N`."})
    prepare_workers: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata={"help": "Processes decoding images into the prepared array (once per dataset)."},
    )
    progress_interval_seconds: float = field(
        default=1.0,
        metadata={"help": "How often the loop reads the loss, reports and asks about a cancel."},
    )
    compile_model: bool = field(
        default=False,
        metadata={"help": "torch.compile both towers; slower first steps (see bench)."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: less memory, more time."},
    )
    base_models_dir: Path | None = field(
        default=None, metadata={"help": "Folder of local base models."}
    )
    eval_batch_size: int = field(default=128, metadata={"help": "Images per evaluation batch."})

    def to_json(self) -> dict[str, Any]:
        return to_json_dict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingConfig:
        """The config `to_json` wrote; an unknown or missing field is refused by name."""
        return from_json_dict(cls, data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def field_help(cls) -> dict[str, str]:
        return {item.name: item.metadata.get("help", "") for item in fields(cls)}
