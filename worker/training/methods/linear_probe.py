"""`linear_probe`: a linear head on frozen features; `lp_ft`: probe first, then fine-tune.

The head starts as the zero-shot classifier (class-prompt features times the temperature), so
training begins from what CLIP already answers. The CLIP weights stay untouched by the probe;
the head is saved next to them and serving classifies with it. LP-FT (Kumar et al. 2022) then
fine-tunes the image tower together with that head at the lower `learning_rate`: starting from
a good head keeps the features from being distorted by a random one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from app.ml.class_head import ClassHead
from app.ml.encode import encode_images
from worker.training.inputs.task import TaskTensors
from worker.training.methods.base import (
    VISION_PARTS,
    ParameterGroup,
    Phase,
    TrainingMethod,
    freeze_all_but,
)


class LinearProbe(TrainingMethod):
    name = "linear_probe"

    _head: ClassHead | None = None
    _towers_train = False

    def prepare(self, task: TaskTensors, resume_from: Path | None) -> None:
        super().prepare(task, resume_from)
        if resume_from is not None:
            self._head = ClassHead.load(resume_from).to(self.device)
            return
        clip = self.loaded.clip
        with torch.no_grad():
            features = task.class_features(clip)
            self._head = ClassHead.zero_shot(features, clip.logit_scale.exp().item())
        self._head.to(self.device)

    def head(self) -> ClassHead:
        assert self._head is not None, "prepare() comes first"
        return self._head

    def start_phase(self, phase: Phase) -> list[ParameterGroup]:
        freeze_all_but(self.loaded.clip, [])
        self._towers_train = False
        return [
            ParameterGroup(list(self.head().named_parameters()), self.config.head_learning_rate)
        ]

    def loss(self, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self._towers_train):
            image_features = encode_images(self.loaded.clip, pixels)
        return F.cross_entropy(
            self.head()(image_features),
            self.task.targets(rows),
            label_smoothing=self.config.label_smoothing,
        )

    def train_mode(self, training: bool) -> None:
        # Frozen towers stay in eval mode, so the probe sees the features serving will see.
        self.loaded.clip.train(training and self._towers_train)
        self.head().train(training)


class LinearProbeThenFineTune(LinearProbe):
    name = "lp_ft"

    def phases(self) -> list[Phase]:
        probe = self.config.probe_epochs
        return [Phase("probe", 1, probe), Phase("fine-tune", probe + 1, self.config.epochs)]

    def start_phase(self, phase: Phase) -> list[ParameterGroup]:
        if phase.name == "probe":
            return super().start_phase(phase)
        clip = self.loaded.clip
        vision = [(n, p) for n, p in clip.named_parameters() if n.startswith(VISION_PARTS)]
        freeze_all_but(clip, vision)
        self._towers_train = True
        head = list(self.head().named_parameters())
        return [ParameterGroup(vision + head, self.config.learning_rate)]
