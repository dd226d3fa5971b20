"""The two training objectives: classification over class prompts, and symmetric contrastive."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    image_features: torch.Tensor,
    class_text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of each image against every class prompt; features must be unit length."""
    logits = logit_scale * image_features @ class_text_features.T
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: image i belongs with text i, both directions averaged."""
    logits_per_image = logit_scale * image_features @ text_features.T
    targets = torch.arange(len(image_features), device=image_features.device)
    return (
        F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)
    ) / 2
