"""Fine-tuning methods, by the name a job's `method` hyperparameter gives."""

from __future__ import annotations

import torch

from worker.training.config import TrainingConfig
from worker.training.methods.base import ParameterGroup, Phase, TrainingMethod
from worker.training.methods.full import Flyp, FullFineTune
from worker.training.methods.linear_probe import LinearProbe, LinearProbeThenFineTune
from worker.training.methods.lora import LowRankAdapters

METHODS: dict[str, type[TrainingMethod]] = {
    method.name: method
    for method in (FullFineTune, Flyp, LinearProbe, LinearProbeThenFineTune, LowRankAdapters)
}


def build_method(config: TrainingConfig, device: torch.device) -> TrainingMethod:
    return METHODS[config.method](config, device)


__all__ = ["METHODS", "ParameterGroup", "Phase", "TrainingMethod", "build_method"]
