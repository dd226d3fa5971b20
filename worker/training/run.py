"""`run(config, out_dir, callbacks)`: a whole fine-tuning run, without queue or database.

The base model is evaluated first (on val, and zero-shot on the control set), then the method
trains phase by phase with an evaluation and a checkpoint after every epoch, early stopping if
asked; at the end `conclude` evaluates the best checkpoint as served, tries WiSE-FT mixes and
writes the report. A run resumes from the latest checkpoint in out_dir.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from app.jobs.event_types import EventType
from app.ml.class_head import HEAD_FILE_NAME
from app.ml.model_metadata import ModelMetadata
from worker.training.checkpoints.folder import (
    TrainerState,
    has_optimizer_state,
    load_optimizer_state,
    prune_checkpoints,
    read_trainer_state,
    snapshot_checkpoint,
)
from worker.training.conclude import conclude
from worker.training.config import TrainingConfig
from worker.training.distributed.ranks import current_ranks
from worker.training.early_stopping import early_stop_reason
from worker.training.inputs.control import control_accuracy
from worker.training.loop import EpochContext, build_optimizer, steps_per_epoch, train_one_epoch
from worker.training.methods import Phase
from worker.training.progress import (
    CheckpointInfo,
    Notice,
    RunResult,
    StopRequested,
    TrainingCallbacks,
)
from worker.training.report import result_summary
from worker.training.schedule import LrSchedule
from worker.training.session import RunSession, evaluate_live, start_session


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def run(
    config: TrainingConfig,
    out_dir: Path,
    callbacks: TrainingCallbacks | None = None,
    earlier_dirs: list[Path] | None = None,
) -> RunResult:
    """Fine-tune, evaluating the base model first and after every epoch.

    Resumes from the newest good checkpoint in out_dir or in `earlier_dirs` (the folders of
    earlier attempts at the same job); writes and prunes only in out_dir.
    """
    seed_everything(config.seed)
    ranks = current_ranks()
    session = start_session(
        config, out_dir, callbacks or TrainingCallbacks(), earlier_dirs or [], ranks
    )
    state = (
        read_trainer_state(session.resume_from)
        if session.resume_from
        else measure_baseline(session)
    )
    try:
        train_phases(session, state)
        session.checkpoints.finish()
    except StopRequested:
        session.checkpoints.finish()
        return RunResult(
            stopped=True,
            best_checkpoint=out_dir / state.best_checkpoint if state.best_checkpoint else None,
            history=state.history,
        )
    finally:
        session.checkpoints.close()
    if not ranks.is_main:  # rank 0 alone evaluates the best as served and reports
        return RunResult(stopped=False, best_checkpoint=None, history=state.history)
    return conclude(session, state)


def measure_baseline(session: RunSession) -> TrainerState:
    """The base model on val (and the control set) before any step: the report's reference."""
    result = evaluate_live(session, epoch=0)
    return TrainerState(
        epoch=0,
        step=0,
        best_metric=None,
        best_checkpoint=None,
        history=[{"epoch": 0, **result.metrics}],
        baseline={
            "val": result_summary(result),
            "control_accuracy": control_accuracy(session.evaluator, session.control),
        },
    )


def train_phases(session: RunSession, state: TrainerState) -> None:
    """Every epoch not yet trained, phase by phase; an early stop ends the run."""
    config, method = session.config, session.method
    steps = steps_per_epoch(len(session.train_loader), config.grad_accum_steps)
    phases = method.phases()
    for phase in phases:
        if state.stopped_early or state.epoch >= phase.last_epoch:
            continue
        context = phase_context(session, phase, state, steps)
        if state.epoch + 1 == phase.first_epoch and len(phases) > 1:
            session.callbacks.on_notice(
                Notice(EventType.PHASE, f"{phase.name} phase from epoch {phase.first_epoch}")
            )
        for epoch in range(max(phase.first_epoch, state.epoch + 1), phase.last_epoch + 1):
            train_loss = train_one_epoch(
                context,
                session.train_loader,
                epoch=epoch,
                first_step=state.step,
                phase_step=(epoch - phase.first_epoch) * steps,
            )
            state.step += steps
            metrics = {"train_loss": train_loss, **evaluate_live(session, epoch).metrics}
            state.epoch = epoch
            state.history.append({"epoch": epoch, **metrics})
            if phase is phases[-1] and config.early_stopping_patience is not None:
                state.stopped_early = early_stop_reason(
                    state.history,
                    session.metric_name,
                    patience=config.early_stopping_patience,
                    min_delta=config.early_stopping_min_delta,
                )
            if session.ranks.is_main:
                write_epoch_checkpoint(session, context, state, metrics)
            if state.stopped_early:
                session.callbacks.on_notice(
                    Notice(EventType.EARLY_STOP, state.stopped_early, {"epoch": epoch})
                )
                return


def phase_context(
    session: RunSession, phase: Phase, state: TrainerState, steps: int
) -> EpochContext:
    """The phase's trainable parameters, optimizer and schedule; resumed state if it is ours."""
    config = session.config
    groups = session.method.start_phase(phase)
    state.trainable_parameters[phase.name] = sum(
        parameter.numel() for group in groups for _, parameter in group.parameters
    )
    optimizer = build_optimizer(groups, config, session.device)
    resumed = session.resume_from
    # A checkpoint written inside this phase holds this optimizer's state, unless it was a
    # complete run's last (kept without it): a run asked for more epochs starts AdamW afresh.
    if resumed is not None and state.epoch in phase and has_optimizer_state(resumed):
        load_optimizer_state(optimizer, resumed)
    wrapped_loss, hold_sync = session.ranks.wrap(session.method.loss, session.method.modules())
    return EpochContext(
        method=session.method,
        optimizer=optimizer,
        schedule=LrSchedule.for_phase(config, epochs=phase.num_epochs, steps_per_epoch=steps),
        config=config,
        device=session.device,
        precision=session.evaluator.precision,
        pixel_spec=session.evaluator.pixel_spec,
        total_steps=config.epochs * steps,
        callbacks=session.callbacks,
        at_progress_point=session.checkpoints.poll,
        ranks=session.ranks,
        wrapped_loss=wrapped_loss,
        hold_sync=hold_sync,
    )


def model_metadata(
    session: RunSession, state: TrainerState, metrics: dict[str, Any]
) -> ModelMetadata:
    config, method = session.config, session.method
    return ModelMetadata(
        kind=session.manifest.kind,
        labels=session.manifest.classes,
        prompt_template=config.prompt_templates[0],
        prompt_templates=config.prompt_templates,
        base_model=config.base_model,
        epoch=state.epoch,
        step=state.step,
        metrics=metrics,
        method=method.name,
        head_file=HEAD_FILE_NAME if method.head() is not None else None,
    )


def write_epoch_checkpoint(
    session: RunSession, context: EpochContext, state: TrainerState, metrics: dict[str, float]
) -> None:
    """Save this epoch; it becomes the best when its val metric beats the best so far.

    The snapshot is taken now and written in the background while the next epoch trains; the
    older checkpoints are pruned and the supervisor told once it is on disk.
    """
    value = metrics.get(session.metric_name)
    folder = session.out_dir / f"epoch-{state.epoch}"
    # Without a val split there is nothing to compare: the latest epoch is the best.
    if value is None or state.best_metric is None or value > state.best_metric:
        state.best_metric = value
        state.best_checkpoint = folder.name
    state.complete = state.stopped_early is not None or state.epoch >= session.config.epochs
    # The previous write first: its host copies are freed, and this snapshot reuses them.
    session.checkpoints.finish()
    snapshot = snapshot_checkpoint(
        method=session.method,
        metadata=model_metadata(session, state, metrics),
        optimizer=context.optimizer,
        state=state,
        config=session.config,
    )
    keep = {folder, session.out_dir / str(state.best_checkpoint)}
    written = CheckpointInfo(
        epoch=state.epoch,
        step=state.step,
        path=folder,
        metric_name=session.metric_name,
        metric_value=value,
    )

    def on_disk() -> None:
        prune_checkpoints(session.out_dir, keep=keep)
        session.callbacks.on_checkpoint(written)

    session.checkpoints.submit(snapshot, folder, on_disk)
