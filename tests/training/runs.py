"""What the run tests share: a recorder of callbacks and a small, fast tiny-clip config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.training.config import TrainingConfig
from worker.training.progress import CheckpointInfo, Notice, StepProgress, TrainingCallbacks


class Recorder(TrainingCallbacks):
    def __init__(self, stop_after_steps: int | None = None) -> None:
        self.steps: list[StepProgress] = []
        self.evaluations: list[tuple[int, dict[str, Any]]] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.notices: list[Notice] = []
        self.stop_after_steps = stop_after_steps

    def on_step(self, progress: StepProgress) -> None:
        self.steps.append(progress)

    def on_evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.evaluations.append((epoch, metrics))

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        self.checkpoints.append(checkpoint)

    def on_notice(self, notice: Notice) -> None:
        self.notices.append(notice)

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps


def tiny_config(dataset_dir: Path, **overrides: Any) -> TrainingConfig:
    values: dict[str, Any] = {
        "base_model": "tiny-clip",
        "dataset_dir": dataset_dir,
        "epochs": 4,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "weight_decay": 0.05,
        "warmup_ratio": 0.1,
        "prepare_workers": 2,
        # Report (and ask about a cancel) after every step, so the tests can count steps.
        "progress_interval_seconds": 0.0,
    }
    values.update(overrides)
    return TrainingConfig(**values)
