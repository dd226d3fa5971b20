"""`run(config, out_dir, callbacks)`: a whole fine-tuning run, without queue or database."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from app.ml.base_models import LoadedClip, load_base_model, load_clip_folder
from app.ml.encode import class_prompts, pick_device, tokenize
from app.ml.manifest import Manifest, read_manifest
from app.ml.model_files import ModelMetadata
from app.ml.precision import training_autocast
from app.ml.preprocess import input_size, pixel_spec
from worker.training.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_optimizer_state,
    prune_checkpoints,
    read_trainer_state,
    save_checkpoint,
)
from worker.training.config import TrainingConfig
from worker.training.data import PreparedLoader
from worker.training.evaluate import PRIMARY_METRIC, evaluate
from worker.training.loop import EpochContext, build_optimizer, train_one_epoch
from worker.training.prepared import load_prepared
from worker.training.progress import (
    CheckpointInfo,
    RunResult,
    StopRequested,
    TrainingCallbacks,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def make_loaders(
    config: TrainingConfig, manifest: Manifest, loaded: LoadedClip, device: torch.device
) -> tuple[PreparedLoader, PreparedLoader]:
    """Train and val loaders over the dataset's prepared array, built first if needed."""
    height, width = input_size(loaded.image_processor)
    images = load_prepared(
        config.dataset_dir,
        [item.file for item in manifest.items],
        max(height, width),
        workers=config.prepare_workers,
    )

    def split_rows(split: str) -> list[int]:
        return [row for row, item in enumerate(manifest.items) if item.split == split]

    train_loader = PreparedLoader(
        images=images,
        rows=split_rows("train"),
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
    )
    val_loader = PreparedLoader(
        images=images,
        rows=split_rows("val"),
        batch_size=config.eval_batch_size,
        shuffle=False,
        seed=config.seed,
        device=device,
    )
    return train_loader, val_loader


def run(
    config: TrainingConfig, out_dir: Path, callbacks: TrainingCallbacks | None = None
) -> RunResult:
    """Fine-tune, evaluating the base model first and after every epoch; resumes from out_dir."""
    callbacks = callbacks or TrainingCallbacks()
    seed_everything(config.seed)
    manifest = read_manifest(config.dataset_dir)
    device = pick_device(config.device)
    resume_from = latest_checkpoint(out_dir)
    loaded = (
        load_clip_folder(str(resume_from))
        if resume_from
        else load_base_model(config.base_model, config.base_models_dir)
    )
    loaded.clip.to(device)  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
    apply_speed_options(loaded, config)
    train_loader, val_loader = make_loaders(config, manifest, loaded, device)
    context = build_context(config, manifest, loaded, device, len(train_loader), callbacks)
    if resume_from:
        load_optimizer_state(context.optimizer, resume_from)
        state = read_trainer_state(resume_from)
    else:
        state = TrainerState(epoch=0, step=0, best_metric=None, best_checkpoint=None, history=[])
        base_metrics = run_evaluation(context, val_loader, manifest, epoch=0)
        state.history.append({"epoch": 0, **base_metrics})
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            train_loss = train_one_epoch(context, train_loader, epoch=epoch, first_step=state.step)
            state.step += len(train_loader)
            metrics = {
                "train_loss": train_loss,
                **run_evaluation(context, val_loader, manifest, epoch=epoch),
            }
            state.epoch = epoch
            state.history.append({"epoch": epoch, **metrics})
            write_epoch_checkpoint(context, loaded, state, metrics, out_dir)
    except StopRequested:
        return finish(state, out_dir, stopped=True)
    return finish(state, out_dir, stopped=False)


def apply_speed_options(loaded: LoadedClip, config: TrainingConfig) -> None:
    """Options that trade memory or start-up time for speed; both off unless asked for."""
    if config.gradient_checkpointing:
        loaded.clip.gradient_checkpointing_enable()
    if config.compile_model:
        # Module.compile keeps parameter names, so checkpoints stay plain CLIP folders.
        loaded.clip.vision_model.compile()
        loaded.clip.text_model.compile()


def build_context(
    config: TrainingConfig,
    manifest: Manifest,
    loaded: LoadedClip,
    device: torch.device,
    steps_per_epoch: int,
    callbacks: TrainingCallbacks,
) -> EpochContext:
    """Everything the steps need, prepared once: targets and tokens are on the device already."""
    total_steps = config.epochs * steps_per_epoch
    class_tokens = class_targets = caption_tokens = None
    if manifest.kind == "classification":
        prompts = class_prompts(manifest.classes, config.prompt_template)
        class_tokens = tokenize(loaded.tokenizer, prompts, device)
        class_index = {name: index for index, name in enumerate(manifest.classes)}
        class_targets = torch.tensor(
            [class_index.get(str(item.label), -1) for item in manifest.items], device=device
        )
    else:
        captions = [str(item.text) for item in manifest.items]
        encoded = tokenize(loaded.tokenizer, captions, device)
        caption_tokens = {
            name: encoded[name] for name in ("input_ids", "attention_mask") if name in encoded
        }
    processor = loaded.image_processor
    return EpochContext(
        clip=loaded.clip,
        tokenizer=loaded.tokenizer,
        optimizer=build_optimizer(loaded.clip, config, device),
        config=config,
        kind=manifest.kind,
        classes=manifest.classes,
        class_tokens=class_tokens,
        class_targets=class_targets,
        caption_tokens=caption_tokens,
        device=device,
        precision=training_autocast(device)(),
        pixel_spec=pixel_spec(processor),
        total_steps=total_steps,
        warmup_steps=int(config.warmup_ratio * total_steps),
        callbacks=callbacks,
    )


def run_evaluation(
    context: EpochContext, val_loader: PreparedLoader, manifest: Manifest, *, epoch: int
) -> dict[str, float]:
    metrics = evaluate(context, val_loader, manifest.items)
    context.callbacks.on_evaluation(epoch, metrics)
    return metrics


def write_epoch_checkpoint(
    context: EpochContext,
    loaded: LoadedClip,
    state: TrainerState,
    metrics: dict[str, float],
    out_dir: Path,
) -> None:
    """Save this epoch; it becomes the best when its val metric beats the best so far."""
    metric_name = PRIMARY_METRIC[context.kind]
    value = metrics.get(metric_name)
    folder = out_dir / f"epoch-{state.epoch}"
    # Without a val split there is nothing to compare: the latest epoch is the best.
    if value is None or state.best_metric is None or value > state.best_metric:
        state.best_metric = value
        state.best_checkpoint = folder.name
    metadata = ModelMetadata(
        kind=context.kind,
        labels=context.classes,
        prompt_template=context.config.prompt_template,
        base_model=context.config.base_model,
        epoch=state.epoch,
        step=state.step,
        metrics=metrics,
    )
    save_checkpoint(
        loaded=loaded,
        metadata=metadata,
        optimizer=context.optimizer,
        state=state,
        config=context.config,
        folder=folder,
    )
    prune_checkpoints(out_dir, keep={folder, out_dir / str(state.best_checkpoint)})
    context.callbacks.on_checkpoint(
        CheckpointInfo(
            epoch=state.epoch,
            step=state.step,
            path=folder,
            metric_name=metric_name,
            metric_value=value,
        )
    )


def finish(state: TrainerState, out_dir: Path, *, stopped: bool) -> RunResult:
    best_name = state.best_checkpoint
    best_metrics = next(
        (entry for entry in state.history if f"epoch-{entry['epoch']}" == best_name), {}
    )
    return RunResult(
        stopped=stopped,
        best_checkpoint=out_dir / best_name if best_name else None,
        best_metrics=best_metrics,
        history=state.history,
    )
