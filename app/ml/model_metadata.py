"""`clipft.json`, what a model folder says about itself beside its weights: labels, prompts,
method, metrics, calibration.

Apart from the weights so that what only reads it (the worker's main process, which registers
models) does not import torch and transformers, seconds of every worker's start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


def read_metadata(folder: Path) -> ModelMetadata:
    return ModelMetadata(**json.loads((folder / METADATA_NAME).read_text()))


def write_metadata(folder: Path, metadata: ModelMetadata) -> None:
    (folder / METADATA_NAME).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True))
