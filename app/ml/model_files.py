"""A trained model on disk: a `save_pretrained` folder plus `clipft.json` with its labels.

The folder loads with plain `CLIPModel.from_pretrained`; `clipft.json` adds what serving needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPProcessor

from app.ml.base_models import LoadedClip, load_clip_folder
from app.ml.class_head import ClassHead
from app.ml.model_metadata import ModelMetadata, read_metadata, write_metadata


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


def load_model_folder(folder: Path) -> tuple[LoadedClip, ModelMetadata]:
    return load_clip_folder(folder), read_metadata(folder)


def load_class_head(folder: Path, metadata: ModelMetadata) -> ClassHead | None:
    """The folder's trained head, when its method trained one."""
    return ClassHead.load(folder) if metadata.head_file else None
