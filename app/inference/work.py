"""What one request asks of a shared forward pass, and what it gets back."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageWork:
    """A request's preprocessed images, and the texts to compare them with (None: classify)."""

    pixels: torch.Tensor  # N x 3 x H x W uint8, on the CPU
    texts: list[str] | None = None

    @property
    def image_count(self) -> int:
        return len(self.pixels)

    @property
    def text_count(self) -> int:
        return len(self.texts or ())


@dataclass(frozen=True)
class PassAnswer:
    """float32 on the CPU, one row per image."""

    # Softmax over the model's labels (classification) or over the request's texts.
    probabilities: torch.Tensor
    # Cosine similarity with each text; None for classification.
    cosine: torch.Tensor | None = None
