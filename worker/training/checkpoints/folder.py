"""Checkpoints: `save_pretrained` folders with optimizer state, written atomically.

Everything is safetensors or JSON, never pickle, so a checkpoint can be loaded without trusting
whoever wrote it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from app.core.storage import atomic_dir
from app.ml.model_metadata import ModelMetadata
from worker.training.checkpoints.names import TRAINER_STATE_NAME
from worker.training.checkpoints.snapshot import ModelSnapshot, host_copy
from worker.training.config import TrainingConfig
from worker.training.methods import TrainingMethod

OPTIMIZER_TENSORS_NAME = "optimizer.safetensors"
OPTIMIZER_GROUPS_NAME = "optimizer_groups.json"
CONFIG_NAME = "training_config.json"


@dataclass
class TrainerState:
    epoch: int
    step: int
    best_metric: float | None
    best_checkpoint: str | None
    history: list[dict[str, Any]]
    # The base model's val result and control-set accuracy, measured before the first step;
    # the report compares the registered model with them.
    baseline: dict[str, Any] = field(default_factory=dict)
    stopped_early: str | None = None
    # How many parameters each phase trained, by phase name.
    trainable_parameters: dict[str, int] = field(default_factory=dict)
    # No epoch is left to train (the last one, or an early stop): such a checkpoint holds no
    # optimizer state, since nothing would ever load it.
    complete: bool = False

    def entry_for(self, folder_name: str) -> dict[str, Any]:
        """The history entry of the epoch a checkpoint folder (`epoch-N`) holds, or {}."""
        return next(
            (entry for entry in self.history if f"epoch-{entry['epoch']}" == folder_name), {}
        )


@dataclass
class OptimizerSnapshot:
    """The optimizer's per-parameter tensors (host copies) and its parameter groups (JSON)."""

    tensors: dict[str, torch.Tensor]
    groups: str

    @classmethod
    def take(cls, optimizer: torch.optim.Optimizer) -> OptimizerSnapshot:
        state_dict = optimizer.state_dict()
        return cls(
            tensors=host_copy(
                {
                    f"{param_id}.{key}": value
                    for param_id, param_state in state_dict["state"].items()
                    for key, value in param_state.items()
                    if isinstance(value, torch.Tensor)
                }
            ),
            groups=json.dumps(state_dict["param_groups"]),
        )

    def write(self, folder: Path) -> None:
        save_file(self.tensors, str(folder / OPTIMIZER_TENSORS_NAME))
        (folder / OPTIMIZER_GROUPS_NAME).write_text(self.groups)


@dataclass
class CheckpointSnapshot:
    """All a checkpoint folder holds, copied out of the live run: writable from any thread."""

    model: ModelSnapshot
    optimizer: OptimizerSnapshot | None
    trainer_state: str
    config: str

    def write(self, folder: Path) -> Path:
        """Write into a temporary sibling, then rename: a crash never leaves a half checkpoint."""
        with atomic_dir(folder) as staging:
            self.model.write(staging)
            if self.optimizer is not None:
                self.optimizer.write(staging)
            (staging / TRAINER_STATE_NAME).write_text(self.trainer_state)
            (staging / CONFIG_NAME).write_text(self.config)
        return folder


def snapshot_checkpoint(
    *,
    method: TrainingMethod,
    metadata: ModelMetadata,
    optimizer: torch.optim.Optimizer,
    state: TrainerState,
    config: TrainingConfig,
) -> CheckpointSnapshot:
    """Copy the run's state out now; training may change every live tensor afterwards.

    A complete run's checkpoint leaves the optimizer out: AdamW's state is twice the weights,
    and copying and writing it was most of the wait for the last checkpoint before the run
    could conclude.
    """
    return CheckpointSnapshot(
        model=method.snapshot_model(metadata),
        optimizer=None if state.complete else OptimizerSnapshot.take(optimizer),
        trainer_state=json.dumps(asdict(state), indent=2),
        config=config.to_json_text(),
    )


def has_optimizer_state(folder: Path) -> bool:
    return (folder / OPTIMIZER_TENSORS_NAME).is_file()


def load_optimizer_state(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / OPTIMIZER_TENSORS_NAME))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = json.loads((folder / OPTIMIZER_GROUPS_NAME).read_text())
    for group in groups:
        # JSON has no tuples; AdamW's fused and foreach paths expect `betas` as one.
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_trainer_state(folder: Path) -> TrainerState:
    return TrainerState(**json.loads((folder / TRAINER_STATE_NAME).read_text()))


def prune_checkpoints(checkpoints_dir: Path, keep: set[Path]) -> None:
    """Delete finished checkpoints other than `keep` (the best and the latest)."""
    for folder in checkpoints_dir.glob("epoch-*"):
        if folder not in keep:
            shutil.rmtree(folder, ignore_errors=True)
