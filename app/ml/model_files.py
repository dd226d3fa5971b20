"""A trained model on disk: a `save_pretrained` folder plus `clipft.json` with its labels.

The folder loads with plain `CLIPModel.from_pretrained`; `clipft.json` adds what serving needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import CLIPProcessor

from app.ml.base_models import LoadedClip, load_clip_folder

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


def save_clip_folder(loaded: LoadedClip, metadata: ModelMetadata, folder: Path) -> None:
    """Write weights (safetensors), tokenizer, image processor and metadata into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    loaded.clip.save_pretrained(folder, safe_serialization=True)
    processor = CLIPProcessor(image_processor=loaded.image_processor, tokenizer=loaded.tokenizer)
    processor.save_pretrained(folder)
    (folder / METADATA_NAME).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True))


def read_metadata(folder: Path) -> ModelMetadata:
    return ModelMetadata(**json.loads((folder / METADATA_NAME).read_text()))


def load_model_folder(folder: Path) -> tuple[LoadedClip, ModelMetadata]:
    return load_clip_folder(str(folder)), read_metadata(folder)
