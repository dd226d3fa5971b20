"""WiSE-FT (Wortsman et al. 2022): mix the base and the fine-tuned weights after training.

`theta(alpha) = (1 - alpha) * base + alpha * fine_tuned`, for the CLIP weights and for a head
(whose base is the zero-shot head). Each mix is scored on val and on the control set; the best
by val among the mixes and the fine-tuned model itself (alpha = 1) is the one registered.
Works on served folders, so it applies to every method: a LoRA folder holds merged weights.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.core.storage import atomic_dir
from app.ml.base_models import LoadedClip, load_base_model
from app.ml.class_head import ClassHead
from app.ml.model_files import load_class_head, load_model_folder, save_clip_folder
from app.ml.model_metadata import ModelMetadata
from worker.training.config import TrainingConfig
from worker.training.inputs.task import TaskTensors

WISE_FT_DIR_NAME = "wise-ft"


@dataclass
class ServedModel:
    """Weights as serving sees them: plain CLIP, plus the head when the method trained one."""

    loaded: LoadedClip
    head: ClassHead | None


@dataclass
class MixScore:
    alpha: float
    metrics: dict[str, float]
    control_accuracy: float | None
    # Kept so the winner's evaluation need not be repeated.
    details: Any = None


def load_served(folder: Path, device: torch.device) -> tuple[ServedModel, ModelMetadata]:
    loaded, metadata = load_model_folder(folder)
    loaded.clip.to(device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
    head = load_class_head(folder, metadata)
    return ServedModel(loaded, head.to(device) if head else None), metadata


def base_for_mixing(
    config: TrainingConfig, fine_tuned: ServedModel, task: TaskTensors, device: torch.device
) -> ServedModel:
    """The base model, with the zero-shot head when the fine-tuned model has a head."""
    base = load_base_model(config.base_model, config.base_models_dir)
    base.clip.to(device)  # type: ignore[arg-type]
    head = None
    if fine_tuned.head is not None:
        with torch.no_grad():
            features = task.class_features(base.clip)
            head = ClassHead.zero_shot(features, base.clip.logit_scale.exp().item())
    return ServedModel(base, head)


def mix(base: ServedModel, fine_tuned: ServedModel, alpha: float) -> ServedModel:
    """A new model whose every floating-point weight is the alpha-mix of the two."""
    mixed = copy.deepcopy(fine_tuned)
    mix_into(mixed.loaded.clip, base.loaded.clip, fine_tuned.loaded.clip, alpha)
    if mixed.head is not None and base.head is not None and fine_tuned.head is not None:
        mix_into(mixed.head, base.head, fine_tuned.head, alpha)
    return mixed


@torch.no_grad()
def mix_into(
    target: torch.nn.Module, base: torch.nn.Module, fine_tuned: torch.nn.Module, alpha: float
) -> None:
    base_state, target_state = base.state_dict(), target.state_dict()
    for name, value in fine_tuned.state_dict().items():
        if value.is_floating_point():
            mixed = torch.lerp(base_state[name].float(), value.float(), alpha)
            target_state[name].copy_(mixed)


def choose(scores: list[MixScore], fine_tuned: MixScore, metric_name: str) -> MixScore:
    """The best by val; ties go to the larger alpha (closer to what was trained)."""
    candidates = [*scores, fine_tuned]
    return max(candidates, key=lambda score: (score.metrics.get(metric_name, 0.0), score.alpha))


def write_mix(mixed: ServedModel, metadata: ModelMetadata, alpha: float, folder: Path) -> Path:
    with atomic_dir(folder) as staging:
        save_clip_folder(mixed.loaded, dataclasses.replace(metadata, wise_ft_alpha=alpha), staging)
        if mixed.head is not None:
            mixed.head.save(staging)
    return folder
