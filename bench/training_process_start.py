"""What starting each run in its own process costs: seconds from a job's start to its first step.

In-process is the old way (torch already imported by the worker); the child process pays for
the interpreter, the imports and the pipe. Rerun: .venv/bin/python -m bench.training_process_start
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.training.synthetic_folder import write_synthetic_folder
from worker.supervisor import run_training_process
from worker.training.config import TrainingConfig
from worker.training.progress import StepProgress, TrainingCallbacks
from worker.training.run import run

ROUNDS = 3


class FirstStepClock(TrainingCallbacks):
    """Notes when the first step is reported, then asks the run to stop."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_step_seconds: float | None = None

    def on_step(self, progress: StepProgress) -> None:
        if self.first_step_seconds is None:
            self.first_step_seconds = time.perf_counter() - self.started

    def should_stop(self) -> bool:
        return self.first_step_seconds is not None


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_synthetic_folder(root / "dataset", per_class=8)
        config = TrainingConfig(
            base_model="tiny-clip",
            dataset_dir=root / "dataset",
            epochs=50,
            batch_size=8,
            prepare_workers=1,
            device="cpu",
        )

        def in_process(clock: FirstStepClock) -> None:
            run(config, root / f"in-process-{clock.started}", clock)

        def child_process(clock: FirstStepClock) -> None:
            out_dir = root / f"child-{clock.started}"
            run_training_process(
                config,
                out_dir,
                clock,
                config_path=out_dir.with_suffix(".json"),
                log_path=out_dir.with_suffix(".log"),
            )

        variants: dict[str, Callable[[FirstStepClock], None]] = {
            "in-process": in_process,
            "child process": child_process,
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(ROUNDS):
            for name, variant in variants.items():
                clock = FirstStepClock()
                variant(clock)
                assert clock.first_step_seconds is not None
                seconds[name].append(clock.first_step_seconds)
    medians = {name: statistics.median(samples) for name, samples in seconds.items()}
    print(f"start of a run to its first step, tiny-clip on the CPU, {os.cpu_count()} CPUs")
    for name, value in medians.items():
        print(f"  {name:>13}: {value:5.2f} s (median of {ROUNDS})")
    print(f"  the child process costs {medians['child process'] - medians['in-process']:.2f} s")
    print("rerun: .venv/bin/python -m bench.training_process_start")


if __name__ == "__main__":
    main()
