"""Training throughput: clipft's training run against the bare step of the same model.

(a) the bare step: clipft's loss, optimizer, clipping and precision on device-resident tensors,
    no data path at all: what the model can do on this machine;
(b) `worker.training.run.run` on a dataset uploaded through the real ingest path (photo-like
    JPEGs and PNGs, 512x384): images/s inside an epoch, and end to end (model load, base-model
    evaluation, every epoch's evaluation and checkpoint) with a cold prepared-array cache (the
    first job on a dataset) and a warm one (every later job on it).
The bare step runs before, between and after the training runs, and the medians of both sides
are compared, so that load elsewhere on a shared machine moves neither much.
Targets (issue 5): b/a >= 0.85 inside an epoch, >= 0.7 end to end.

Rerun: .venv/bin/python -m bench.train_throughput [--device cuda --model vit-b-32
       --images 4096 --batch-size 256]
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

import worker.training.run
from app.core.config import Settings
from app.datasets.ingest import ingest_archive
from app.ml.base_models import load_base_model
from app.ml.encode import class_prompts, encode_images, encode_tokens, pick_device, tokenize
from app.ml.manifest import read_manifest
from app.ml.precision import training_autocast
from app.ml.preprocess import input_size
from app.ml.synthetic import photo_like
from app.ml.tiny_clip import TINY_CLIP_NAME
from bench.clip_models import MODEL_CHOICES, write_base_model
from worker.training.checkpoints.folder import CheckpointSnapshot
from worker.training.checkpoints.writer import CheckpointWriter
from worker.training.config import TrainingConfig
from worker.training.loop import build_optimizer
from worker.training.losses import classification_loss
from worker.training.methods import ParameterGroup
from worker.training.progress import StepProgress, TrainingCallbacks
from worker.training.run import run

CLASSES = [f"part type {index}" for index in range(8)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--model", default=TINY_CLIP_NAME, choices=MODEL_CHOICES)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bare-steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="warm runs, each after a bare step")
    parser.add_argument(
        "--compile", action="store_true", help="run (b) with torch.compile on both towers"
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="run (b) with checkpointing"
    )
    return parser.parse_args()


def upload_zip(num_images: int) -> bytes:
    """Class folders of photo-like images, half JPEG (quality 95), half PNG, all different."""
    bases = [np.asarray(photo_like(512, 384, seed=seed)) for seed in range(32)]

    def encoded(index: int) -> tuple[str, bytes]:
        # A shifted copy of a base photo: distinct pixels without generating each one anew.
        pixels = np.roll(bases[index % len(bases)], shift=7 * index, axis=1)
        buffer = io.BytesIO()
        if index % 2:
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
            suffix = "jpg"
        else:
            Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
            suffix = "png"
        return f"{CLASSES[index % len(CLASSES)]}/{index:05d}.{suffix}", buffer.getvalue()

    archive_buffer = io.BytesIO()
    with (
        zipfile.ZipFile(archive_buffer, "w", zipfile.ZIP_STORED) as archive,
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
    ):
        for name, payload in pool.map(encoded, range(num_images)):
            archive.writestr(name, payload)
    return archive_buffer.getvalue()


def ingest(data_dir: Path, num_images: int) -> Path:
    """Store the upload the way `POST /datasets` does: checked, decoded once, split, PNGs."""
    settings = Settings(data_dir=data_dir)
    archive_path = data_dir / "upload.zip"
    archive_path.write_bytes(upload_zip(num_images))
    dataset_dir = data_dir / "datasets" / "bench"
    ingest_archive(
        archive_path=archive_path,
        archive_name="upload.zip",
        dataset_dir=dataset_dir,
        settings=settings,
    )
    return dataset_dir


def bare_step_rate(config: TrainingConfig, steps: int) -> float:
    """Images/s of forward, loss, backward, clipping and AdamW on tensors already on the device."""
    device = pick_device(config.device)
    loaded = load_base_model(config.base_model, config.base_models_dir)
    clip = loaded.clip.to(device)  # type: ignore[arg-type]
    clip.train()
    height, width = input_size(loaded.image_processor)
    pixels = torch.randn(config.batch_size, 3, height, width, device=device)
    labels = torch.randint(0, len(CLASSES), (config.batch_size,), device=device)
    tokens = tokenize(loaded.tokenizer, class_prompts(CLASSES, config.prompt_templates[0]), device)
    trainable = ParameterGroup(list(clip.named_parameters()), config.learning_rate)
    optimizer = build_optimizer([trainable], config, device)
    precision = training_autocast(device)()

    def step() -> None:
        with precision:
            image_features = encode_images(clip, pixels)
            loss = classification_loss(
                image_features, encode_tokens(clip, tokens), clip.logit_scale.exp(), labels
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clip.parameters(), config.max_grad_norm)
        optimizer.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, 4.6052)

    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochRates(TrainingCallbacks):
    """The loop's own images/s at the end of each epoch, and when each epoch's steps ran.

    Progress points come at an epoch's first and last step (each after a host sync), so the
    gaps between them split a run's time into setup, steps, between epochs and the end.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.rates: list[float] = []
        self.epoch_spans: dict[int, list[float]] = {}

    def on_step(self, progress: StepProgress) -> None:
        span = self.epoch_spans.setdefault(progress.epoch, [time.perf_counter()] * 2)
        span[1] = time.perf_counter()
        if progress.step % self.steps_per_epoch == 0:
            self.rates.append(progress.samples_per_second)


class PartTimer:
    """Seconds spent in the run's parts, by wrapping the functions the run calls.

    Wall time in the calling thread, except `checkpoint write`, which is the background thread's
    and overlaps training; `waiting for a write` is what the run's thread lost to it.
    """

    PARTS: ClassVar[dict[str, tuple[Any, str]]] = {
        "session start": (worker.training.run, "start_session"),
        "base evaluation": (worker.training.run, "measure_baseline"),
        "evaluations": (worker.training.run, "evaluate_live"),
        "snapshots": (worker.training.run, "snapshot_checkpoint"),
        "waiting for a write": (CheckpointWriter, "finish"),
        "checkpoint write": (CheckpointSnapshot, "write"),
        "conclude": (worker.training.run, "conclude"),
    }

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(self.PARTS, 0.0)
        for part, (owner, name) in self.PARTS.items():
            setattr(owner, name, self._timed(part, getattr(owner, name)))

    def _timed(self, part: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - started

        return timed

    def take(self) -> dict[str, float]:
        taken = dict(self.seconds)
        self.seconds = dict.fromkeys(self.PARTS, 0.0)
        return taken


def timed_run(
    config: TrainingConfig, out_dir: Path, num_train: int, parts: PartTimer
) -> dict[str, Any]:
    steps_per_epoch = (num_train + config.batch_size - 1) // config.batch_size
    rates = EpochRates(steps_per_epoch)
    parts.take()
    started = time.perf_counter()
    run(config, out_dir, rates)
    ended = time.perf_counter()
    seconds = ended - started
    # The first epoch warms allocators and caches up; the bare step gets warm-up steps too.
    steady = rates.rates[1:] or rates.rates
    spans = [rates.epoch_spans[epoch] for epoch in sorted(rates.epoch_spans)]
    return {
        "in_epoch": statistics.median(steady),
        "end_to_end": config.epochs * num_train / seconds,
        "seconds": seconds,
        "parts": parts.take(),
        "breakdown": {
            # Model load, prepared array, base-model evaluation and the first step.
            "setup": spans[0][0] - started,
            "steps": sum(end - start for start, end in spans),
            # Each epoch's evaluation and checkpoint snapshot, and the next first step.
            "between epochs": sum(nxt[0] - cur[1] for cur, nxt in itertools.pairwise(spans)),
            # The last evaluation and checkpoint, then the served model's evaluation and report.
            "end": ended - spans[-1][1],
        },
    }


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        write_base_model(args.model, data_dir / "base")
        started = time.perf_counter()
        dataset_dir = ingest(data_dir, args.images)
        ingest_seconds = time.perf_counter() - started
        config = TrainingConfig(
            # The loss the bare step computes: cross-entropy over the class prompts.
            method="full",
            base_model=args.model,
            base_models_dir=data_dir / "base",
            dataset_dir=dataset_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=1e-4,
            device=args.device,
            compile_model=args.compile,
            gradient_checkpointing=args.gradient_checkpointing,
        )
        num_train = len(read_manifest(dataset_dir).split("train"))
        bare_rates = [bare_step_rate(config, args.bare_steps)]
        parts = PartTimer()
        cold = timed_run(config, data_dir / "cold", num_train, parts)
        warm_runs = []
        for round_index in range(args.rounds):
            bare_rates.append(bare_step_rate(config, args.bare_steps))
            warm_runs.append(timed_run(config, data_dir / f"warm-{round_index}", num_train, parts))
        bare_rates.append(bare_step_rate(config, args.bare_steps))
    # Medians of interleaved samples: a burst of load elsewhere, or one lucky sample, moves
    # neither side much.
    warm: dict[str, Any] = {
        key: statistics.median(result[key] for result in warm_runs)
        for key in ("in_epoch", "end_to_end", "seconds")
    }
    for table in ("breakdown", "parts"):
        warm[table] = {
            part: statistics.median(result[table][part] for result in warm_runs)
            for part in warm_runs[0][table]
        }
    report(args, config, num_train, ingest_seconds, bare_rates, cold, warm)


def report(
    args: argparse.Namespace,
    config: TrainingConfig,
    num_train: int,
    ingest_seconds: float,
    bare_rates: list[float],
    cold: dict[str, Any],
    warm: dict[str, Any],
) -> None:
    device = pick_device(config.device)
    card = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {os.cpu_count()} cores"
    )
    print(
        f"train throughput: {args.model}, {card}, batch {config.batch_size}, "
        f"{args.images} images ({num_train} train), {config.epochs} epochs, "
        f"precision {'bf16 autocast' if device.type == 'cuda' else 'fp32'}"
    )
    print(f"  ingest of the upload (not timed below): {ingest_seconds:.1f} s")
    bare = statistics.median(bare_rates)
    print(
        f"  bare step samples (the median is the reference): "
        f"{', '.join(f'{rate:.0f}' for rate in bare_rates)} images/s; "
        f"runs with the array reused: median of {args.rounds}"
    )
    in_epoch = warm["in_epoch"]
    rows = [
        ("(a) bare step, device-resident tensors", bare, None),
        ("(b) run, inside an epoch", in_epoch, 0.85),
        ("(b) run, end to end, prepared array reused", warm["end_to_end"], 0.7),
        ("(b) run, end to end, first job (builds it)", cold["end_to_end"], None),
    ]
    print(f"  {'path':<44} {'images/s':>9} {'b/a':>6}  target")
    for name, rate, target in rows:
        ratio = rate / bare
        verdict = "" if target is None else f">= {target}: {'met' if ratio >= target else 'MISSED'}"
        print(f"  {name:<44} {rate:>9.1f} {ratio:>6.2f}  {verdict}")
    print(f"  run seconds: cold {cold['seconds']:.1f}, warm {warm['seconds']:.1f}")
    print(
        "  warm run's seconds by part (medians): "
        + ", ".join(f"{part} {seconds:.2f}" for part, seconds in warm["breakdown"].items())
    )
    print(
        "  inside those (medians): "
        + ", ".join(f"{part} {seconds:.2f}" for part, seconds in warm["parts"].items())
    )
    options = [
        f"--{name.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value}")
        for name, value in vars(args).items()
        if value is not False
    ]
    print("rerun: .venv/bin/python -m bench.train_throughput " + " ".join(options))


if __name__ == "__main__":
    main()
