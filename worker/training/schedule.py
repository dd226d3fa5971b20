"""Learning-rate schedules: a multiplier of the peak rate for every optimisation step.

Every schedule warms up linearly over the first `warmup_ratio` of the phase's steps, then
decays: `cosine` and `linear` to zero at the last step, `step` by `gamma` every
`step_size_epochs`, `constant` not at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.ml.hyperparameters import Hyperparameters


@dataclass(frozen=True)
class LrSchedule:
    kind: str
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int = 1
    step_size_epochs: int = 1
    gamma: float = 0.1

    @classmethod
    def for_phase(
        cls, hyperparameters: Hyperparameters, *, epochs: int, steps_per_epoch: int
    ) -> LrSchedule:
        total = epochs * steps_per_epoch
        return cls(
            kind=hyperparameters.lr_schedule,
            total_steps=total,
            warmup_steps=int(hyperparameters.warmup_ratio * total),
            steps_per_epoch=steps_per_epoch,
            step_size_epochs=hyperparameters.step_size_epochs,
            gamma=hyperparameters.gamma,
        )

    def multiplier(self, step: int) -> float:
        """The multiplier at `step` (0-based, counted from the start of the phase)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            drops = step // (self.step_size_epochs * self.steps_per_epoch)
            return self.gamma**drops
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))
