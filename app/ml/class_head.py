"""The linear map from unit image features to class logits that classification serves.

Zero-shot CLIP is one such map (the class-prompt text features times the temperature); a
linear probe starts there and trains it. A trained head is stored as `head.safetensors` next to
the CLIP weights, which it leaves untouched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HEAD_FILE_NAME = "head.safetensors"


class ClassHead(torch.nn.Module):
    """`logits = features @ weight.T + bias`, one row of `weight` per class."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        if weight.ndim != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"a head needs weight (C, D) and bias (C,), got {weight.shape}")
        self.weight = torch.nn.Parameter(weight.detach().clone().float())
        self.bias = torch.nn.Parameter(bias.detach().clone().float())

    @classmethod
    def zero_shot(cls, class_features: torch.Tensor, logit_scale: float) -> ClassHead:
        """The head that answers exactly as CLIP does with its class prompts."""
        weight = class_features.float() * logit_scale
        return cls(weight, torch.zeros(len(weight), device=weight.device))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.weight.T + self.bias

    def save(self, folder: Path) -> None:
        tensors = {"weight": self.weight.detach().cpu(), "bias": self.bias.detach().cpu()}
        save_file(
            {name: value.contiguous() for name, value in tensors.items()},
            str(folder / HEAD_FILE_NAME),
        )

    @classmethod
    def load(cls, folder: Path) -> ClassHead:
        tensors = load_file(str(folder / HEAD_FILE_NAME))
        return cls(tensors["weight"], tensors["bias"])
