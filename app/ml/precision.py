"""The number format a model runs in, for training and for serving, chosen in one place."""

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
    """bf16 autocast where the hardware does bf16 natively, else float32; or as `precision` says.

    On a CPU with AVX512-BF16 (an AMD EPYC, two cores) bf16 served a ViT-B/32 1.3x (one image
    per request) to 2x (64 images) faster than float32 (bench.predict_throughput --precision);
    CPUs without bf16 instructions emulate it, so `auto` keeps float32 there.
    """
    if precision == "fp32":
        return Autocast(device.type, None)
    if precision == "bf16":
        return Autocast(device.type, torch.bfloat16)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Autocast("cuda", torch.bfloat16)
    if device.type == "cpu" and cpu_has_native_bf16():
        return Autocast("cpu", torch.bfloat16)
    return Autocast(device.type, None)


def training_autocast(device: torch.device) -> Autocast:
    """bf16 autocast on GPUs (fast, no loss scaling needed); float32 on the CPU.

    Unlike serving, CPU training stays in float32: the accuracy of runs on the CPU (the demo, the
    tests) was measured in float32, and nothing has measured bf16 training there.
    """
    if device.type == "cuda":
        return Autocast("cuda", torch.bfloat16)
    return Autocast(device.type, None)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    # Private helpers of torch.cpu; treated as absent (float32) should a release drop them.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
