"""What a training run tells its caller while it runs, and how the caller can stop it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.jobs.event_types import EventType


@dataclass(frozen=True)
class StepProgress:
    epoch: int
    epochs: int
    step: int
    total_steps: int
    train_loss: float
    learning_rate: float
    samples_per_second: float
    eta_seconds: float

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 1.0


@dataclass(frozen=True)
class CheckpointInfo:
    epoch: int
    step: int
    path: Path
    metric_name: str
    metric_value: float | None


@dataclass(frozen=True)
class Notice:
    """Something a user should read in the job's events: an early stop, a phase, WiSE-FT."""

    type: EventType
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    stopped: bool
    best_checkpoint: Path | None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None


class TrainingCallbacks:
    """Hooks a run calls; the defaults do nothing, so the library runs alone from a shell."""

    def on_step(self, progress: StepProgress) -> None:
        """Called after every optimisation step; throttle anything slow here."""

    def on_evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Called with the val metrics; epoch 0 is the base model before training."""

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        """Called once a checkpoint folder is complete on disk."""

    def on_notice(self, notice: Notice) -> None:
        """Called with news for the job's events (why the run stopped early, …)."""

    def should_stop(self) -> bool:
        """Asked before every step; True ends the run early (a cancel)."""
        return False


class StopRequested(Exception):
    """Raised inside the loop when `should_stop` says so."""
