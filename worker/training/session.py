"""What a run builds once before its first step: model, method, task, loaders, evaluator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from app.jobs.event_types import EventType
from app.ml.base_models import LoadedClip
from app.ml.encode import pick_device
from app.ml.manifest import Manifest, read_manifest
from app.ml.precision import training_autocast
from app.ml.preprocess import input_size, pixel_spec
from worker.training.checkpoints.resume import adopt, find_resume_point
from worker.training.checkpoints.writer import CheckpointWriter
from worker.training.config import TrainingConfig
from worker.training.distributed.ranks import SingleProcess
from worker.training.evaluate import PRIMARY_METRIC, EvalResult, Evaluator, evaluate
from worker.training.inputs.control import ControlSet, load_control_set
from worker.training.inputs.data import PreparedLoader
from worker.training.inputs.prepared import load_prepared
from worker.training.inputs.task import TaskTensors, build_task
from worker.training.methods import TrainingMethod, build_method
from worker.training.progress import Notice, TrainingCallbacks
from worker.training.wise_ft import ServedModel


@dataclass
class RunSession:
    """Everything a run builds once, before its first step."""

    config: TrainingConfig
    out_dir: Path
    callbacks: TrainingCallbacks
    manifest: Manifest
    device: torch.device
    method: TrainingMethod
    task: TaskTensors
    train_loader: PreparedLoader
    val_loader: PreparedLoader
    control: ControlSet | None
    evaluator: Evaluator
    resume_from: Path | None
    checkpoints: CheckpointWriter = dataclasses.field(default_factory=CheckpointWriter)
    # The run's process group; a run without one is a group of one.
    ranks: SingleProcess = dataclasses.field(default_factory=SingleProcess)

    @property
    def metric_name(self) -> str:
        return PRIMARY_METRIC[self.manifest.kind]

    def evaluator_for(self, loaded: LoadedClip) -> Evaluator:
        return dataclasses.replace(self.evaluator, clip=loaded.clip)


def start_session(
    config: TrainingConfig,
    out_dir: Path,
    callbacks: TrainingCallbacks,
    earlier_dirs: list[Path],
    ranks: SingleProcess | None = None,
) -> RunSession:
    ranks = ranks or SingleProcess()
    manifest = read_manifest(config.dataset_dir)
    device = pick_device(config.device)
    # Rank 0 makes the resume point this attempt's own; the others then find that same folder.
    if not ranks.is_main:
        ranks.barrier()
    resume_from = resume_point(out_dir, earlier_dirs, callbacks)
    if ranks.is_main and ranks.distributed:
        ranks.barrier()
    method = build_method(config, device)
    method.ranks = ranks
    loaded = method.load(resume_from)
    task = build_task(manifest, loaded.tokenizer, config.prompt_templates, device)
    method.prepare(task, resume_from)
    apply_speed_options(loaded, config)
    train_loader, val_loader = make_loaders(config, manifest, loaded, device, ranks)
    evaluator = Evaluator(
        clip=loaded.clip,
        tokenizer=loaded.tokenizer,
        pixel_spec=pixel_spec(loaded.image_processor),
        precision=training_autocast(device)(),
        device=device,
    )
    return RunSession(
        config=config,
        out_dir=out_dir,
        callbacks=callbacks,
        manifest=manifest,
        device=device,
        method=method,
        task=task,
        train_loader=train_loader,
        val_loader=val_loader,
        control=load_control_set(config, loaded, device),
        evaluator=evaluator,
        resume_from=resume_from,
        ranks=ranks,
    )


def resume_point(
    out_dir: Path, earlier_dirs: list[Path], callbacks: TrainingCallbacks
) -> Path | None:
    """The newest checkpoint that verifies, made this attempt's own; says which ones did not."""
    point = find_resume_point(out_dir, earlier_dirs)
    for problem in point.problems:
        callbacks.on_notice(Notice(EventType.CHECKPOINT_UNUSABLE, problem))
    if point.folder is None:
        return None
    adopted = adopt(point.folder, out_dir)
    callbacks.on_notice(
        Notice(EventType.RESUME, f"resuming from {adopted.name}", {"checkpoint": adopted.name})
    )
    return adopted


def make_loaders(
    config: TrainingConfig,
    manifest: Manifest,
    loaded: LoadedClip,
    device: torch.device,
    ranks: SingleProcess,
) -> tuple[PreparedLoader, PreparedLoader]:
    """Train and val loaders over the dataset's prepared array, built first if needed; each
    rank trains on its share of every global batch and evaluates on the whole val split."""
    height, width = input_size(loaded.image_processor)
    images = load_prepared(
        config.dataset_dir,
        [item.file for item in manifest.items],
        max(height, width),
        workers=config.prepare_workers,
    )

    def split_loader(split: str, batch_size: int, shuffle: bool) -> PreparedLoader:
        share = {"rank": ranks.rank, "world": ranks.world} if shuffle else {}
        return PreparedLoader(
            **share,
            images=images,
            rows=[row for row, item in enumerate(manifest.items) if item.split == split],
            batch_size=batch_size,
            shuffle=shuffle,
            seed=config.seed,
            device=device,
        )

    return (
        split_loader("train", config.batch_size, shuffle=True),
        split_loader("val", config.eval_batch_size, shuffle=False),
    )


def apply_speed_options(loaded: LoadedClip, config: TrainingConfig) -> None:
    """Options that trade memory or start-up time for speed; both off unless asked for."""
    if config.gradient_checkpointing:
        loaded.clip.gradient_checkpointing_enable()
    if config.compile_model:
        # Module.compile keeps parameter names, so checkpoints stay plain CLIP folders.
        loaded.clip.vision_model.compile()
        loaded.clip.text_model.compile()


def evaluate_live(session: RunSession, epoch: int) -> EvalResult:
    result = evaluate(
        session.evaluator,
        session.task,
        session.val_loader,
        session.manifest.items,
        head=session.method.head(),
    )
    session.callbacks.on_evaluation(epoch, result.metrics)
    return result


def evaluate_served(session: RunSession, served: ServedModel) -> EvalResult:
    """Val metrics of weights as serving loads them (a checkpoint folder, a WiSE-FT mix), with
    the served logits kept for calibration."""
    return evaluate(
        session.evaluator_for(served.loaded),
        session.task,
        session.val_loader,
        session.manifest.items,
        head=served.head,
        keep_logits=True,
    )
