"""The optimisation loop: optimizer, one epoch of steps with gradient accumulation.

The hot loop never waits on the host: the loss is summed on the device and read, together with
the cancel check, only at progress points about once a second (`progress_interval_seconds`).
What trains and the loss belong to the method; the loop never asks which method it runs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from app.ml.preprocess import PixelSpec
from worker.training.config import TrainingConfig
from worker.training.distributed.ranks import LossFunction, SingleProcess
from worker.training.inputs.augment import CROP_SCALES, eval_pixels, sample_uniforms, train_pixels
from worker.training.inputs.data import Batch, PreparedLoader
from worker.training.methods import ParameterGroup, TrainingMethod
from worker.training.progress import StepProgress, StopRequested, TrainingCallbacks
from worker.training.schedule import LrSchedule

FUSED_ADAMW_DEVICES = ("cuda", "cpu")
# With several ranks, progress points (a report, the stop vote) fall every this many batches on
# every rank alike: a vote is a collective, so no rank may pick its own time.
RANKS_CHECK_BATCHES = 8


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
    # The run's process group; the loss as DDP wraps it, and its hold on the gradient sync.
    ranks: SingleProcess = field(default_factory=SingleProcess)
    wrapped_loss: LossFunction | None = None
    hold_sync: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext

    def loss(self, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (self.wrapped_loss or self.method.loss)(pixels, rows)

    def progress_point(self, index: int, last: bool, due: bool) -> bool:
        if self.ranks.distributed:
            return index % RANKS_CHECK_BATCHES == 0 or last
        return index == 0 or due or last

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
    method, config, ranks = context.method, context.config, context.ranks
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
        ranks.begin_batch(batch.global_size)
        last = index == num_batches - 1
        steps_now = (index + 1) % accumulate == 0 or last
        # Accumulated batches keep their gradients local; the step's last one syncs them all.
        with contextlib.nullcontext() if steps_now else context.hold_sync():
            with context.precision:
                loss = context.loss(context.train_pixels(batch, epoch), batch.rows)
            # The last group of an epoch may be shorter; its batches weigh as much as any other.
            group_size = min(accumulate, num_batches - index // accumulate * accumulate)
            (loss * ranks.loss_weight() / group_size).backward()
        loss_sum += loss.detach().float() * len(batch)
        seen += len(batch)
        if steps_now:
            optimizer_step(context)
            step += 1
            phase_step += 1
        now = time.perf_counter()
        if context.progress_point(index, last, now - last_report >= interval):
            # The one host sync of the loop: read the loss, report, and ask about a cancel.
            rate_seen = seen * ranks.world
            report_progress(context, epoch, step, rate_seen, loss_sum.item() / seen, now - started)
            if ranks.agree(context.callbacks.should_stop(), context.device):
                raise StopRequested
            context.at_progress_point()
            last_report = time.perf_counter()
    if ranks.distributed:  # the global batch's mean, as one process would have it
        totals = ranks.sum_(
            torch.stack([loss_sum, torch.tensor(float(seen), device=loss_sum.device)])
        )
        return float(totals[0] / totals[1])
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
