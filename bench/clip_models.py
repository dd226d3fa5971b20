"""Base models for benchmarks: tiny-clip, and a CLIP the size of ViT-B/32 with random weights.

Speed does not depend on the weights' values, and nothing can be downloaded here, so the
ViT-B/32-size model is `CLIPConfig()`'s defaults (224 px, patch 32, 12+12 layers, 49,408-token
vocabulary) with the tiny tokenizer's special-token ids.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from app.ml.base_models import LoadedClip
from app.ml.model_files import save_clip_folder
from app.ml.model_metadata import ModelMetadata
from app.ml.tiny_clip import TINY_CLIP_NAME, build_tiny_tokenizer

VIT_B32_NAME = "vit-b-32"
MODEL_CHOICES = (TINY_CLIP_NAME, VIT_B32_NAME)


def build_vit_b32() -> LoadedClip:
    tokenizer = build_tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip = CLIPModel(config)
    return LoadedClip(clip, tokenizer, CLIPImageProcessor())


def write_base_model(name: str, base_models_dir: Path) -> None:
    """Make `name` loadable as a base model from `base_models_dir` (tiny-clip is built in)."""
    if name == VIT_B32_NAME and not (base_models_dir / name / "config.json").is_file():
        metadata = ModelMetadata(
            kind="classification", labels=[], prompt_template="{}", base_model=name
        )
        save_clip_folder(build_vit_b32(), metadata, base_models_dir / name)
