"""The seam between the loop and a fine-tuning method.

A method owns which parameters train (in one or more phases, each with its own rates), the loss
of a batch, the head evaluation classifies with, and what a checkpoint folder holds. The loop
calls these and never asks which method it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from app.ml.base_models import LoadedClip, load_base_model, load_clip_folder
from app.ml.class_head import ClassHead
from app.ml.model_metadata import ModelMetadata
from worker.training.checkpoints.snapshot import (
    ClipFolderSnapshot,
    ModelSnapshot,
    head_copy,
    host_copy,
)
from worker.training.config import TrainingConfig
from worker.training.distributed.ranks import SingleProcess
from worker.training.inputs.task import TaskTensors

VISION_PARTS = ("vision_model.", "visual_projection.")
TEXT_PARTS = ("text_model.", "text_projection.")


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs (1-based, inclusive) that trains one set of parameters."""

    name: str
    first_epoch: int
    last_epoch: int

    def __contains__(self, epoch: object) -> bool:
        return isinstance(epoch, int) and self.first_epoch <= epoch <= self.last_epoch

    @property
    def num_epochs(self) -> int:
        return self.last_epoch - self.first_epoch + 1


@dataclass
class ParameterGroup:
    """Parameters that share a peak learning rate."""

    parameters: list[tuple[str, torch.nn.Parameter]]
    learning_rate: float


class TrainingMethod:
    """The defaults load and save a plain CLIP folder; subclasses say what trains and the loss."""

    name: ClassVar[str]

    def __init__(self, config: TrainingConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self._loaded: LoadedClip | None = None
        self._task: TaskTensors | None = None
        # The run's process group: a contrastive loss gathers its features across it.
        self.ranks = SingleProcess()

    @property
    def loaded(self) -> LoadedClip:
        assert self._loaded is not None, "load() comes first"
        return self._loaded

    @property
    def task(self) -> TaskTensors:
        assert self._task is not None, "prepare() comes first"
        return self._task

    def load(self, resume_from: Path | None) -> LoadedClip:
        """The model to train: the base, or the checkpoint a resumed run continues from."""
        if resume_from is None:
            loaded = load_base_model(self.config.base_model, self.config.base_models_dir)
        else:
            loaded = load_clip_folder(resume_from)
        loaded.clip.to(self.device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
        self._loaded = loaded
        return loaded

    def prepare(self, task: TaskTensors, resume_from: Path | None) -> None:
        """Called once the task's tensors exist: build what the method adds (a head, …)."""
        self._task = task

    def phases(self) -> list[Phase]:
        return [Phase("train", 1, self.config.epochs)]

    def start_phase(self, phase: Phase) -> list[ParameterGroup]:
        """Freeze everything but this phase's parameters; return them with their rates."""
        raise NotImplementedError

    def loss(self, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self) -> ClassHead | None:
        """The head classification is served with; None means the class prompts."""
        return None

    def modules(self) -> list[torch.nn.Module]:
        """Every module holding parameters the method trains (what data parallel syncs)."""
        head = self.head()
        return [self.loaded.clip, *([head] if head is not None else [])]

    def train_mode(self, training: bool) -> None:
        self.loaded.clip.train(training)

    def snapshot_model(self, metadata: ModelMetadata) -> ModelSnapshot:
        """Host copies of a folder serving can load: plain CLIP weights, and the head if any."""
        return ClipFolderSnapshot(
            loaded=self.loaded,
            weights=host_copy(self.loaded.clip.state_dict()),
            metadata=metadata,
            head=head_copy(self.head()),
        )

    def after_step(self) -> None:
        """Called after each optimizer step; CLIP's temperature stays within bounds."""
        with torch.no_grad():
            self.loaded.clip.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))


def freeze_all_but(
    module: torch.nn.Module, trainable: list[tuple[str, torch.nn.Parameter]]
) -> None:
    keep = {id(parameter) for _, parameter in trainable}
    for parameter in module.parameters():
        parameter.requires_grad_(id(parameter) in keep)


def tower_parameters(
    clip: torch.nn.Module, *, exclude: tuple[str, ...] = ()
) -> list[tuple[str, torch.nn.Parameter]]:
    """Every named parameter of the CLIP model except those under the `exclude` prefixes."""
    return [
        (name, parameter)
        for name, parameter in clip.named_parameters()
        if not name.startswith(exclude)
    ]


def frozen_prefixes(freeze: str) -> tuple[str, ...]:
    return {"none": (), "text": TEXT_PARTS, "vision": VISION_PARTS}[freeze]
