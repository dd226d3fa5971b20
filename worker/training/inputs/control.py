"""The control set: a classification set the job does not train on, scored zero-shot.

Its accuracy before and after training shows what fine-tuning cost the model's general
knowledge. It is scored through the class prompts, never a method's head, so a linear probe
(whose towers do not change) scores exactly the same after as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from app.ml.base_models import LoadedClip
from app.ml.class_head import ClassHead
from app.ml.manifest import Manifest, read_manifest
from app.ml.preprocess import input_size
from worker.training.config import TrainingConfig
from worker.training.evaluate import Evaluator, evaluate
from worker.training.inputs.data import PreparedLoader
from worker.training.inputs.prepared import load_prepared
from worker.training.inputs.task import TaskTensors, build_task


@dataclass
class ControlSet:
    manifest: Manifest
    task: TaskTensors
    loader: PreparedLoader


def load_control_set(
    config: TrainingConfig, loaded: LoadedClip, device: torch.device
) -> ControlSet | None:
    """The job's control set, if it names one."""
    if config.control_dataset_dir is None:
        return None
    return load_whole_set(
        config.control_dataset_dir,
        loaded,
        device,
        templates=config.prompt_templates,
        batch_size=config.eval_batch_size,
        workers=config.prepare_workers,
    )


def load_whole_set(
    dataset_dir: Path,
    loaded: LoadedClip,
    device: torch.device,
    *,
    templates: list[str],
    batch_size: int = 128,
    workers: int = 1,
) -> ControlSet:
    """Every image of a classification set (both splits), prepared like a training set's."""
    manifest = read_manifest(dataset_dir)
    height, width = input_size(loaded.image_processor)
    images = load_prepared(
        dataset_dir, [item.file for item in manifest.items], max(height, width), workers=workers
    )
    loader = PreparedLoader(
        images=images,
        rows=list(range(len(manifest.items))),
        batch_size=batch_size,
        shuffle=False,
        seed=0,
        device=device,
    )
    task = build_task(manifest, loaded.tokenizer, templates, device)
    return ControlSet(manifest=manifest, task=task, loader=loader)


def control_accuracy(
    evaluator: Evaluator, control: ControlSet | None, head: ClassHead | None = None
) -> float | None:
    """Accuracy on the set with the evaluator's weights: zero-shot, or with `head` when given."""
    if control is None:
        return None
    result = evaluate(evaluator, control.task, control.loader, control.manifest.items, head=head)
    return result.metrics.get("val_accuracy")
