"""The number format serving runs a model in, chosen in one place for every forward pass."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Autocast:
    """Enter it around a forward pass; outputs may be bf16, so cast them to float32 after."""

    device_type: str
    dtype: torch.dtype | None  # None: plain float32, no autocast

    def __call__(self) -> AbstractContextManager[object]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def serving_autocast(device: torch.device, precision: Precision = "auto") -> Autocast:
    """bf16 autocast on a GPU that has it, float32 elsewhere, unless `precision` says otherwise.

    `auto` keeps float32 on the CPU, where bf16 is only fast with bf16 instructions (AVX512-BF16,
    AMX) and is emulated elsewhere; `bf16` opts in (`bench.predict_throughput --precision`).
    """
    if precision == "fp32":
        return Autocast(device.type, None)
    if precision == "bf16":
        return Autocast(device.type, torch.bfloat16)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Autocast("cuda", torch.bfloat16)
    return Autocast(device.type, None)
