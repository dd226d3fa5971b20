"""A trained model on disk: a `save_pretrained` folder plus `clipft.json` with its labels.

The folder loads with plain `CLIPModel.from_pretrained`; `clipft.json` adds what serving needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPProcessor

from app.ml.base_models import LoadedClip, load_clip_folder
from app.ml.class_head import ClassHead

METADATA_NAME = "clipft.json"


@dataclass(frozen=True)
class ModelMetadata:
    kind: str
    labels: list[str]
    prompt_template: str
    base_model: str
    epoch: int = 0
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    method: str = "full"
    # All the class prompt templates (their text features are averaged); older models have
    # only `prompt_template`.
    prompt_templates: list[str] = field(default_factory=list)
    # A trained class head (`ClassHead`) in the folder classifies instead of the prompts.
    head_file: str | None = None
    wise_ft_alpha: float | None = None
    # What the job gained and lost (the job's report), once training has finished.
    report: dict[str, Any] | None = None
    # Temperature scaling fitted on val after training: serving divides the logits by it
    # before the softmax. None (older models, caption sets): 1, the probabilities as they are.
    temperature: float | None = None
    # The default abstain threshold, chosen for the job's `target_precision`: below it
    # `/predict` answers no label. None: no default.
    min_confidence: float | None = None

    @property
    def templates(self) -> list[str]:
        return self.prompt_templates or [self.prompt_template]


def save_clip_folder(
    loaded: LoadedClip,
    metadata: ModelMetadata,
    folder: Path,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write weights (safetensors), tokenizer, image processor and metadata into `folder`.

    `weights`, when given, replace the model's own tensors (a host copy taken earlier).
    """
    folder.mkdir(parents=True, exist_ok=True)
    loaded.clip.save_pretrained(folder, safe_serialization=True, state_dict=weights)
    processor = CLIPProcessor(image_processor=loaded.image_processor, tokenizer=loaded.tokenizer)
    processor.save_pretrained(folder)
    write_metadata(folder, metadata)


def read_metadata(folder: Path) -> ModelMetadata:
    return ModelMetadata(**json.loads((folder / METADATA_NAME).read_text()))


def write_metadata(folder: Path, metadata: ModelMetadata) -> None:
    (folder / METADATA_NAME).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True))


def load_model_folder(folder: Path) -> tuple[LoadedClip, ModelMetadata]:
    return load_clip_folder(folder), read_metadata(folder)


def load_class_head(folder: Path, metadata: ModelMetadata) -> ClassHead | None:
    """The folder's trained head, when its method trained one."""
    return ClassHead.load(folder) if metadata.head_file else None
