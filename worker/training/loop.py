"""The optimisation loop: optimizer, learning-rate schedule, one epoch of steps."""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import BatchEncoding, CLIPModel, CLIPTokenizer

from app.ml.encode import encode_images, encode_tokens, tokenize
from worker.training.config import TrainingConfig
from worker.training.data import Batch, BatchLoader
from worker.training.losses import classification_loss, contrastive_loss
from worker.training.progress import StepProgress, StopRequested, TrainingCallbacks


def build_optimizer(clip: CLIPModel, config: TrainingConfig) -> torch.optim.AdamW:
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
    """What every step of a run needs; built once per run."""

    clip: CLIPModel
    tokenizer: CLIPTokenizer
    optimizer: torch.optim.Optimizer
    config: TrainingConfig
    kind: str
    classes: list[str]
    class_tokens: BatchEncoding | None
    device: torch.device
    precision: AbstractContextManager[Any]
    total_steps: int
    warmup_steps: int
    callbacks: TrainingCallbacks


def batch_loss(context: EpochContext, batch: Batch) -> torch.Tensor:
    clip = context.clip
    logit_scale = clip.logit_scale.exp()
    image_features = encode_images(clip, batch.pixel_values.to(context.device, non_blocking=True))
    if context.kind == "classification":
        assert context.class_tokens is not None
        class_features = encode_tokens(clip, context.class_tokens)
        labels = torch.tensor(
            [context.classes.index(str(item.label)) for item in batch.items], device=context.device
        )
        return classification_loss(image_features, class_features, logit_scale, labels)
    tokens = tokenize(context.tokenizer, [str(item.text) for item in batch.items], context.device)
    return contrastive_loss(image_features, encode_tokens(clip, tokens), logit_scale)


def train_one_epoch(
    context: EpochContext, loader: BatchLoader, *, epoch: int, first_step: int
) -> float:
    """Run one pass over the training split; returns the mean loss. Raises StopRequested."""
    clip, config = context.clip, context.config
    clip.train()
    max_log_scale = math.log(config.max_logit_scale)
    step, loss_sum, seen, started = first_step, 0.0, 0, time.perf_counter()
    for batch in loader.batches(epoch):
        if context.callbacks.should_stop():
            raise StopRequested
        multiplier = lr_at(step, total_steps=context.total_steps, warmup_steps=context.warmup_steps)
        learning_rate = set_learning_rate(context.optimizer, config.learning_rate, multiplier)
        with context.precision:
            loss = batch_loss(context, batch)
        context.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), config.max_grad_norm)
        context.optimizer.step()
        with torch.no_grad():
            # CLIP's temperature is clamped so logits cannot blow up (exp(t) <= max_logit_scale).
            clip.logit_scale.clamp_(0, max_log_scale)
        step += 1
        loss_sum += loss.item() * len(batch.items)
        seen += len(batch.items)
        elapsed = time.perf_counter() - started
        rate = seen / elapsed if elapsed > 0 else 0.0
        context.callbacks.on_step(
            StepProgress(
                epoch=epoch,
                epochs=config.epochs,
                step=step,
                total_steps=context.total_steps,
                train_loss=loss_sum / seen,
                learning_rate=learning_rate,
                samples_per_second=rate,
                eta_seconds=(context.total_steps - step) * config.batch_size / rate if rate else 0,
            )
        )
    return loss_sum / max(seen, 1)
