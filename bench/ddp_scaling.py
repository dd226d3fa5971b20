"""Data-parallel scaling: one job's training at N = 1 and N = 2 ranks on the same machine.

Both sides run the worker's real path (`worker.supervisor.run_training_process`: N = 1 is the
single training process, N > 1 torch's elastic launcher with gloo on the CPU, NCCL on GPUs),
the same dataset, hyperparameters and global batch. The prepared-array cache is warmed first,
then the sides alternate (1, N, 1, N, ...) so that load elsewhere on a shared machine moves
neither much; the figures are medians over rounds of images/s inside epochs after the first
(global: all ranks together) and of wall time per run.

On a CPU the two sides share the same cores (N = 1 uses every core's threads, each of N ranks
its share): the ratio says what the process group and the all-reduce cost, not what N devices
would give. With N GPUs (`--device cuda`, `--ranks N`), scaling efficiency is
rate(N) / (N * rate(1)).

Rerun: .venv/bin/python -m bench.ddp_scaling [--ranks 2 --images 1024 --batch-size 64
       --rounds 2 --device cpu --model tiny-clip]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from app.ml.tiny_clip import TINY_CLIP_NAME
from bench.clip_models import MODEL_CHOICES, write_base_model
from bench.train_throughput import ingest
from worker.supervisor import run_training_process
from worker.training.config import TrainingConfig
from worker.training.progress import StepProgress, TrainingCallbacks


class StepRates(TrainingCallbacks):
    """Images/s of each progress report after the first epoch (epoch 0 warms up)."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_step(self, progress: StepProgress) -> None:
        if progress.epoch >= 1 and progress.samples_per_second > 0:
            self.rates.append(progress.samples_per_second)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2, help="N of the data-parallel side")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for one rank per GPU")
    parser.add_argument("--model", default=TINY_CLIP_NAME, choices=MODEL_CHOICES)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    return parser.parse_args()


def measure(config: TrainingConfig, work: Path, name: str) -> tuple[float, float]:
    """(median images/s inside epochs after the first, wall seconds) of one training run."""
    rates = StepRates()
    started = time.perf_counter()
    result = run_training_process(
        config,
        work / name / "out",
        rates,
        config_path=work / name / "config.json",
        log_path=work / name / "train.log",
    )
    wall = time.perf_counter() - started
    if result.stopped or not rates.rates:
        raise RuntimeError(f"{name}: the run reported no steps after epoch 0 ({work / name})")
    return statistics.median(rates.rates), wall


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="clipft-ddp-bench-") as temp:
        work = Path(temp)
        write_base_model(args.model, work / "base-models")
        dataset_dir = ingest(work, args.images)

        def config(devices: int, epochs: int) -> TrainingConfig:
            return TrainingConfig(
                base_model=args.model,
                base_models_dir=work / "base-models",
                dataset_dir=dataset_dir,
                method="full",
                epochs=epochs,
                batch_size=args.batch_size,
                device=args.device,
                devices=devices,
                # Frequent reports: enough rates to take a median from inside each epoch.
                progress_interval_seconds=0.5,
            )

        measure(config(1, 1), work, "warm-up")  # builds the prepared array both sides reuse
        sides: dict[int, list[tuple[float, float]]] = {1: [], args.ranks: []}
        for round_index in range(args.rounds):
            for devices in sides:
                name = f"n{devices}-round{round_index}"
                sides[devices].append(measure(config(devices, args.epochs), work, name))
                rate, wall = sides[devices][-1]
                print(f"  {name}: {rate:8.1f} images/s inside epochs, {wall:6.1f} s end to end")

    one_rate = statistics.median(rate for rate, _ in sides[1])
    many_rate = statistics.median(rate for rate, _ in sides[args.ranks])
    one_wall = statistics.median(wall for _, wall in sides[1])
    many_wall = statistics.median(wall for _, wall in sides[args.ranks])
    print(
        f"model {args.model}, device {args.device}, {args.images} images, "
        f"global batch {args.batch_size}, {args.epochs} epochs, {args.rounds} rounds"
    )
    print(f"N=1:          {one_rate:8.1f} images/s   {one_wall:6.1f} s per run")
    print(f"N={args.ranks}:          {many_rate:8.1f} images/s   {many_wall:6.1f} s per run")
    print(f"N={args.ranks} / N=1:    {many_rate / one_rate:8.2f} (images/s)  "
          f"{one_wall / many_wall:6.2f} (speed end to end)")  # fmt: skip
    # On shared CPU cores N ranks have no more hardware than one process: no efficiency to show.
    if args.device != "cpu":
        print(f"efficiency rate(N) / (N * rate(1)): {many_rate / (args.ranks * one_rate):.2f}")
    print("rerun: .venv/bin/python -m bench.ddp_scaling " + " ".join(
        f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
    ))  # fmt: skip


if __name__ == "__main__":
    main()
