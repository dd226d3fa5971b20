"""The optimisation loop: optimizer, one epoch of steps with gradient accumulation.

The hot loop never waits on the host: the loss is summed on the device and read, together with
the cancel check, only at progress points about once a second (`progress_interval_seconds`).
What trains and the loss belong to the method; the loop never asks which method it runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from app.ml.preprocess import PixelSpec
from worker.training.config import TrainingConfig
from worker.training.inputs.augment import CROP_SCALES, eval_pixels, sample_uniforms, train_pixels
from worker.training.inputs.data import Batch, PreparedLoader
from worker.training.methods import ParameterGroup, TrainingMethod
from worker.training.progress import StepProgress, StopRequested, TrainingCallbacks
from worker.training.schedule import LrSchedule

FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def build_optimizer(
    groups: list[ParameterGroup], config: TrainingConfig, device: torch.device | None = None
) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only: biases, norms and the temperature are exempt."""
    param_groups: list[dict[str, Any]] = []
    for group in groups:
        decay = [p for name, p in group.parameters if not decay_exempt(name, p)]
        exempt = [p for name, p in group.parameters if decay_exempt(name, p)]
        for parameters, weight_decay in ((decay, config.weight_decay), (exempt, 0.0)):
            param_groups.append(
                {
                    "params": parameters,
                    "weight_decay": weight_decay,
                    "lr": group.learning_rate,
                    "peak_lr": group.learning_rate,
                }
            )
    return torch.optim.AdamW(
        param_groups,
        betas=(0.9, 0.98),
        eps=1e-6,
        # One kernel for all parameters instead of a launch per tensor, and no host read of the
        # step count (the single-tensor path calls `.item()` on it for every parameter).
        fused=device is not None and device.type in FUSED_ADAMW_DEVICES,
    )


def decay_exempt(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim < 2 or "logit_scale" in name or "norm" in name


def set_learning_rates(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * multiplier


@dataclass
class EpochContext:
    """What every step of a phase needs; built once per phase, all tensors on the device."""

    method: TrainingMethod
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    config: TrainingConfig
    device: torch.device
    precision: AbstractContextManager[Any]
    pixel_spec: PixelSpec
    total_steps: int
    callbacks: TrainingCallbacks
    # The run's own housekeeping at each progress point (completing background checkpoint writes).
    at_progress_point: Callable[[], None] = lambda: None

    def train_pixels(self, batch: Batch, epoch: int) -> torch.Tensor:
        if self.config.augment == "none":
            return eval_pixels(batch.squares, self.pixel_spec)
        uniforms = sample_uniforms(self.config.seed, epoch, batch.host_rows)
        return train_pixels(
            batch.squares,
            self.pixel_spec,
            torch.from_numpy(uniforms).float().to(self.device, non_blocking=True),
            scale=CROP_SCALES[self.config.augment],
            flip=self.config.flips,
        )


def steps_per_epoch(num_batches: int, grad_accum_steps: int) -> int:
    return math.ceil(num_batches / grad_accum_steps)


def train_one_epoch(
    context: EpochContext,
    loader: PreparedLoader,
    *,
    epoch: int,
    first_step: int,
    phase_step: int,
) -> float:
    """One pass over the training split; returns the mean loss. Raises StopRequested.

    `first_step` counts optimisation steps over the whole run (for progress), `phase_step`
    within the current phase (for its schedule).
    """
    method, config = context.method, context.config
    method.train_mode(True)
    accumulate, num_batches = config.grad_accum_steps, len(loader)
    interval = config.progress_interval_seconds
    step, seen = first_step, 0
    loss_sum = torch.zeros((), device=context.device)
    started = last_report = time.perf_counter()
    context.optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(loader.batches(epoch)):
        if index % accumulate == 0:
            set_learning_rates(context.optimizer, context.schedule.multiplier(phase_step))
        with context.precision:
            loss = method.loss(context.train_pixels(batch, epoch), batch.rows)
        # The last group of an epoch may be shorter; its batches weigh as much as any other.
        group_size = min(accumulate, num_batches - index // accumulate * accumulate)
        (loss / group_size).backward()
        loss_sum += loss.detach().float() * len(batch)
        seen += len(batch)
        if (index + 1) % accumulate == 0 or index == num_batches - 1:
            optimizer_step(context)
            step += 1
            phase_step += 1
        now = time.perf_counter()
        if index == 0 or now - last_report >= interval or index == num_batches - 1:
            # The one host sync of the loop: read the loss, report, and ask about a cancel.
            report_progress(context, epoch, step, seen, loss_sum.item() / seen, now - started)
            if context.callbacks.should_stop():
                raise StopRequested
            context.at_progress_point()
            last_report = time.perf_counter()
    return loss_sum.item() / max(seen, 1)


def optimizer_step(context: EpochContext) -> None:
    parameters = [p for group in context.optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(parameters, context.config.max_grad_norm)
    context.optimizer.step()
    context.optimizer.zero_grad(set_to_none=True)
    context.method.after_step()


def report_progress(
    context: EpochContext, epoch: int, step: int, seen: int, mean_loss: float, elapsed: float
) -> None:
    config = context.config
    rate = seen / elapsed if elapsed > 0 else 0.0
    images_left = (context.total_steps - step) * config.batch_size * config.grad_accum_steps
    context.callbacks.on_step(
        StepProgress(
            epoch=epoch,
            epochs=config.epochs,
            step=step,
            total_steps=context.total_steps,
            train_loss=mean_loss,
            learning_rate=context.optimizer.param_groups[0]["lr"],
            samples_per_second=rate,
            eta_seconds=images_left / rate if rate else 0,
        )
    )
