"""The control set: a classification set the job does not train on, scored zero-shot.

Its accuracy before and after training shows what fine-tuning cost the model's general
knowledge. It is scored through the class prompts, never a method's head, so a linear probe
(whose towers do not change) scores exactly the same after as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.ml.base_models import LoadedClip
from app.ml.manifest import Manifest, read_manifest
from app.ml.preprocess import input_size
from worker.training.config import TrainingConfig
from worker.training.data import PreparedLoader
from worker.training.evaluate import Evaluator, evaluate
from worker.training.prepared import load_prepared
from worker.training.task import TaskTensors, build_task


@dataclass
class ControlSet:
    manifest: Manifest
    task: TaskTensors
    loader: PreparedLoader


def load_control_set(
    config: TrainingConfig, loaded: LoadedClip, device: torch.device
) -> ControlSet | None:
    """Every image of the control set (both splits), prepared like the training set's."""
    if config.control_dataset_dir is None:
        return None
    manifest = read_manifest(config.control_dataset_dir)
    height, width = input_size(loaded.image_processor)
    images = load_prepared(
        config.control_dataset_dir,
        [item.file for item in manifest.items],
        max(height, width),
        workers=config.prepare_workers,
    )
    loader = PreparedLoader(
        images=images,
        rows=list(range(len(manifest.items))),
        batch_size=config.eval_batch_size,
        shuffle=False,
        seed=config.seed,
        device=device,
    )
    task = build_task(manifest, loaded.tokenizer, config.prompt_templates, device)
    return ControlSet(manifest=manifest, task=task, loader=loader)


def control_accuracy(evaluator: Evaluator, control: ControlSet | None) -> float | None:
    """Zero-shot accuracy on the control set with the evaluator's weights; None without one."""
    if control is None:
        return None
    result = evaluate(evaluator, control.task, control.loader, control.manifest.items)
    return result.metrics.get("val_accuracy")
