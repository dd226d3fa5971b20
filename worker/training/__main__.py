"""`python -m worker.training --config CONFIG.json --out-dir DIR`: one run as its own process.

Each event goes out as one protocol line on `--events-fd` (stdout by default). With
`--stdin-control`, a `stop` line on stdin stops the run at its next step, and so does the end
of stdin: a run whose supervisor died stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from worker.training.config import TrainingConfig
from worker.training.distributed import process_group
from worker.training.fault_injection import fault_requested, inject_requested_fault
from worker.training.progress import CheckpointInfo, Notice, StepProgress, TrainingCallbacks
from worker.training.protocol import STOP, Evaluation, Event, RunError, encode
from worker.training.run import run

# An orphan still loading or evaluating gets this long to reach a step and stop cleanly.
ORPHAN_EXIT_SECONDS = 30.0
ORPHAN_EXIT_CODE = 75


class EventWriter(TrainingCallbacks):
    """Callbacks that send every event down a pipe and stop when asked to."""

    def __init__(self, events: BinaryIO) -> None:
        self.events = events
        self.stop_requested = threading.Event()
        self._fault_checks_left = True

    def send(self, event: Event) -> None:
        self.events.write(encode(event))
        self.events.flush()

    def on_step(self, progress: StepProgress) -> None:
        if self._fault_checks_left:
            self._fault_checks_left = fault_requested()
            inject_requested_fault(progress.epoch, self.stop_requested.is_set)
        self.send(progress)

    def on_evaluation(self, epoch: int, metrics: dict[str, Any]) -> None:
        self.send(Evaluation(epoch=epoch, metrics=metrics))

    def on_checkpoint(self, checkpoint: CheckpointInfo) -> None:
        self.send(checkpoint)

    def on_notice(self, notice: Notice) -> None:
        self.send(notice)

    def should_stop(self) -> bool:
        return self.stop_requested.is_set()


def follow_stdin(stop_requested: threading.Event) -> None:
    """Set `stop_requested` on a STOP line or at the end of stdin; exit if still alive later."""

    def watch() -> None:
        # Unbuffered: a daemon thread blocked in a buffered stdin aborts the interpreter's exit.
        with open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) as stdin:
            for line in stdin:
                if line == STOP:
                    stop_requested.set()
        stop_requested.set()
        time.sleep(ORPHAN_EXIT_SECONDS)
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="stdin-control", daemon=True).start()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.training", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="TrainingConfig as JSON.")
    parser.add_argument("--out-dir", type=Path, required=True, help="Checkpoints go here.")
    parser.add_argument(
        "--earlier-dir",
        type=Path,
        action="append",
        default=[],
        help="Checkpoints of an earlier attempt at the same job (may repeat).",
    )
    parser.add_argument("--events-fd", type=int, default=1, help="Descriptor events go to.")
    parser.add_argument(
        "--stdin-control", action="store_true", help="Stop on a `stop` line or end of stdin."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = TrainingConfig.from_json(json.loads(args.config.read_text()))
    events_fd = args.events_fd
    if process_group.launched():  # one rank of several: rank 0 alone sends events
        config = process_group.join(config)
        events_fd = process_group.events_descriptor()
    if events_fd != sys.stdout.fileno():
        os.set_inheritable(events_fd, False)  # programs this run starts must not hold it
    with open(events_fd, "wb", closefd=False) as events:
        writer = EventWriter(events)
        if args.stdin_control:
            follow_stdin(writer.stop_requested)
        try:
            result = run(config, args.out_dir, writer, args.earlier_dir)
        except BaseException as error:
            writer.send(RunError.of(error))
            raise  # the traceback goes to stderr, the run's log
        finally:
            process_group.leave()
        writer.send(result)


if __name__ == "__main__":
    main()
