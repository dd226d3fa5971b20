"""The optimisation loop: optimizer, learning-rate schedule, one epoch of steps.

The hot loop never waits on the host: the loss is summed on the device and read, together with
the cancel check, only at progress points about once a second (`progress_interval_seconds`).
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BatchEncoding, CLIPModel, CLIPTokenizer

from app.ml.encode import encode_images, encode_tokens
from app.ml.preprocess import PixelSpec
from worker.training.augment import eval_pixels, sample_uniforms, train_pixels
from worker.training.config import TrainingConfig
from worker.training.data import Batch, PreparedLoader
from worker.training.losses import classification_loss, contrastive_loss
from worker.training.progress import StepProgress, StopRequested, TrainingCallbacks

FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def build_optimizer(
    clip: CLIPModel, config: TrainingConfig, device: torch.device | None = None
) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only: biases, norms and the temperature are exempt."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in clip.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or "norm" in name
        (no_decay if exempt else decay).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
        # One kernel for all parameters instead of a launch per tensor, and no host read of the
        # step count (the single-tensor path calls `.item()` on it for every parameter).
        fused=device is not None and device.type in FUSED_ADAMW_DEVICES,
    )


def lr_at(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """The schedule's multiplier of the peak rate: linear warmup, then cosine down to zero."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, peak: float, multiplier: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = peak * multiplier
    return peak * multiplier


@dataclass
class EpochContext:
    """What every step of a run needs; built once per run, all tensors already on the device."""

    clip: CLIPModel
    tokenizer: CLIPTokenizer
    optimizer: torch.optim.Optimizer
    config: TrainingConfig
    kind: str
    classes: list[str]
    # Classification: the class prompts, tokenized once; each item's class index, by row.
    class_tokens: BatchEncoding | None
    class_targets: torch.Tensor | None
    # Captions: every item's caption tokens, by row.
    caption_tokens: dict[str, torch.Tensor] | None
    device: torch.device
    precision: AbstractContextManager[Any]
    pixel_spec: PixelSpec
    total_steps: int
    warmup_steps: int
    callbacks: TrainingCallbacks

    def train_pixels(self, batch: Batch, epoch: int) -> torch.Tensor:
        if not self.config.augment:
            return eval_pixels(batch.squares, self.pixel_spec)
        uniforms = sample_uniforms(self.config.seed, epoch, batch.host_rows)
        return train_pixels(
            batch.squares,
            self.pixel_spec,
            torch.from_numpy(uniforms).float().to(self.device, non_blocking=True),
            flip=True,
        )

    def eval_pixels(self, batch: Batch) -> torch.Tensor:
        return eval_pixels(batch.squares, self.pixel_spec)


def batch_loss(context: EpochContext, batch: Batch, epoch: int) -> torch.Tensor:
    clip = context.clip
    logit_scale = clip.logit_scale.exp()
    image_features = encode_images(clip, context.train_pixels(batch, epoch))
    if context.kind == "classification":
        assert context.class_tokens is not None and context.class_targets is not None
        class_features = encode_tokens(clip, context.class_tokens)
        labels = context.class_targets[batch.rows]
        return classification_loss(image_features, class_features, logit_scale, labels)
    assert context.caption_tokens is not None
    tokens = BatchEncoding({name: ids[batch.rows] for name, ids in context.caption_tokens.items()})
    return contrastive_loss(image_features, encode_tokens(clip, tokens), logit_scale)


def optimisation_step(
    context: EpochContext, batch: Batch, *, epoch: int, step: int
) -> torch.Tensor:
    """One step at the scheduled rate; returns the loss, still on the device."""
    clip, config = context.clip, context.config
    multiplier = lr_at(step, total_steps=context.total_steps, warmup_steps=context.warmup_steps)
    set_learning_rate(context.optimizer, config.learning_rate, multiplier)
    with context.precision:
        loss = batch_loss(context, batch, epoch)
    context.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(clip.parameters(), config.max_grad_norm)
    context.optimizer.step()
    with torch.no_grad():
        # CLIP's temperature is clamped so logits cannot blow up (exp(t) <= max_logit_scale).
        clip.logit_scale.clamp_(0, math.log(config.max_logit_scale))
    return loss.detach()


def train_one_epoch(
    context: EpochContext, loader: PreparedLoader, *, epoch: int, first_step: int
) -> float:
    """Run one pass over the training split; returns the mean loss. Raises StopRequested."""
    context.clip.train()
    interval = context.config.progress_interval_seconds
    step, seen = first_step, 0
    loss_sum = torch.zeros((), device=context.device)
    started = last_report = time.perf_counter()
    for index, batch in enumerate(loader.batches(epoch)):
        loss = optimisation_step(context, batch, epoch=epoch, step=step)
        step += 1
        seen += len(batch)
        loss_sum += loss.float() * len(batch)
        now = time.perf_counter()
        if index == 0 or now - last_report >= interval or index == len(loader) - 1:
            # The one host sync of the loop: read the loss, report, and ask about a cancel.
            mean_loss = loss_sum.item() / seen
            report_progress(context, epoch, step, seen, mean_loss, time.perf_counter() - started)
            if context.callbacks.should_stop():
                raise StopRequested
            last_report = time.perf_counter()
    return loss_sum.item() / max(seen, 1)


def report_progress(
    context: EpochContext, epoch: int, step: int, seen: int, mean_loss: float, elapsed: float
) -> None:
    config = context.config
    rate = seen / elapsed if elapsed > 0 else 0.0
    context.callbacks.on_step(
        StepProgress(
            epoch=epoch,
            epochs=config.epochs,
            step=step,
            total_steps=context.total_steps,
            train_loss=mean_loss,
            learning_rate=context.optimizer.param_groups[0]["lr"],
            samples_per_second=rate,
            eta_seconds=(context.total_steps - step) * config.batch_size / rate if rate else 0,
        )
    )
