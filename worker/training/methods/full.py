"""`full`: both towers (less a frozen one) learn; `flyp`: the same with the pretraining loss.

Classification sets train with cross-entropy of each image over the class-prompt features;
FLYP (Goyal et al. 2022) instead pairs each image with its class prompt and uses CLIP's
symmetric contrastive loss, as in pretraining. Caption sets use the contrastive loss either way.
"""

from __future__ import annotations

import torch

from app.ml.encode import encode_images, encode_tokens
from worker.training.distributed.gather import global_contrastive_loss
from worker.training.losses import classification_loss
from worker.training.methods.base import (
    ParameterGroup,
    Phase,
    TrainingMethod,
    freeze_all_but,
    frozen_prefixes,
    tower_parameters,
)


class FullFineTune(TrainingMethod):
    name = "full"

    _frozen_class_features: torch.Tensor | None = None

    def start_phase(self, phase: Phase) -> list[ParameterGroup]:
        clip = self.loaded.clip
        trainable = tower_parameters(clip, exclude=frozen_prefixes(self.config.freeze))
        freeze_all_but(clip, trainable)
        return [ParameterGroup(trainable, self.config.learning_rate)]

    def class_features(self) -> torch.Tensor:
        if self.config.freeze != "text":
            return self.task.class_features(self.loaded.clip)
        # A frozen text tower gives the same class features every step: encode them once.
        if self._frozen_class_features is None:
            with torch.no_grad():
                self._frozen_class_features = self.task.class_features(self.loaded.clip)
        return self._frozen_class_features

    def loss(self, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        clip = self.loaded.clip
        image_features = encode_images(clip, pixels)
        logit_scale = clip.logit_scale.exp()
        if not self.task.is_classification:
            text_features = encode_tokens(clip, self.task.captions(rows))
            return global_contrastive_loss(image_features, text_features, logit_scale, self.ranks)
        return self.classification_loss(image_features, logit_scale, rows)

    def classification_loss(
        self, image_features: torch.Tensor, logit_scale: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        return classification_loss(
            image_features,
            self.class_features(),
            logit_scale,
            self.task.targets(rows),
            label_smoothing=self.config.label_smoothing,
        )


class Flyp(FullFineTune):
    name = "flyp"

    def classification_loss(
        self, image_features: torch.Tensor, logit_scale: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        # Each image's text is its own class prompt; other images' prompts are the negatives.
        text_features = self.class_features()[self.task.targets(rows)]
        return global_contrastive_loss(image_features, text_features, logit_scale, self.ranks)
