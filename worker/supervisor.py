"""Run a training run in a child process and supervise it: relay its events, forward a stop,
and turn how it ended into a RunResult or a readable error.

A plain subprocess, not a multiprocessing child of Celery's daemonic pool: the run may start
DataLoader workers and pin memory, hands back all its GPU memory when it exits, and its crash
(segfault, CUDA OOM, `os._exit`) fails the job instead of the worker.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.storage import atomic_write_json
from worker.training.config import TrainingConfig
from worker.training.progress import (
    CheckpointInfo,
    Notice,
    RunResult,
    StepProgress,
    TrainingCallbacks,
)
from worker.training.protocol import (
    CRASH_SIGNALS,
    RANK_LOST,
    STOP,
    Evaluation,
    Event,
    RunError,
    decode,
)

logger = logging.getLogger(__name__)

# How often the supervisor asks whether to stop: the pace the in-process loop had.
CHECK_SECONDS = 1.0
# After SIGTERM, this long before SIGKILL.
KILL_AFTER_SECONDS = 10.0


class TrainingProcessFailed(RuntimeError):
    """The run's process ended without a result; the message says how, fit for the job's error.

    `rank_lost`: a rank of a data-parallel run was killed from outside (not a crash of its own
    code), so another attempt may well succeed."""

    def __init__(self, message: str, *, rank_lost: bool = False) -> None:
        super().__init__(message)
        self.rank_lost = rank_lost


@dataclass
class Ending:
    """What the supervisor saw of a run before its process ended."""

    result: RunResult | None = None
    error: RunError | None = None
    stop_sent_at: float | None = None


def run_training_process(
    config: TrainingConfig,
    out_dir: Path,
    callbacks: TrainingCallbacks,
    *,
    config_path: Path,
    log_path: Path,
    earlier_dirs: tuple[Path, ...] = (),
    stop_grace_seconds: float = 30.0,
    on_started: Callable[[int], None] = lambda pid: None,
) -> RunResult:
    """Train in `python -m worker.training`; its stdout and stderr are appended to `log_path`."""
    atomic_write_json(config_path, config.to_json())
    events_fd, child_events_fd = os.pipe()
    try:
        process = start_process(
            config_path, out_dir, child_events_fd, log_path, earlier_dirs, devices=config.devices
        )
    except BaseException:
        os.close(events_fd)
        raise
    finally:
        os.close(child_events_fd)  # the child holds its copy; when that closes, we read EOF
    try:
        on_started(process.pid)
        ending = relay(process, events_fd, callbacks, stop_grace_seconds)
        returncode = wait_or_end(process, stop_grace_seconds)
    finally:
        if process.poll() is None:  # the supervisor itself failed: the run must not outlive it
            wait_or_end(process, 0)
        os.close(events_fd)
    return outcome(ending, returncode, log_path)


def start_process(
    config_path: Path,
    out_dir: Path,
    events_fd: int,
    log_path: Path,
    earlier_dirs: tuple[Path, ...] = (),
    *,
    devices: int = 1,
) -> subprocess.Popen[bytes]:
    """One `python -m worker.training` process; for several devices, torch's launcher starting
    one per device (`worker/training/distributed/launch.py`)."""
    run_args = [
        "--config", str(config_path),
        "--out-dir", str(out_dir),
        "--stdin-control",
    ]  # fmt: skip
    for earlier in earlier_dirs:
        run_args += ["--earlier-dir", str(earlier)]
    if devices == 1:
        command = [sys.executable, "-m", "worker.training", "--events-fd", str(events_fd)]
    else:
        command = [
            sys.executable, "-m", "worker.training.distributed.launch",
            "--nproc", str(devices),
            "--run-id", out_dir.parent.parent.name + "-" + out_dir.name,
            "--events-fd", str(events_fd),
            "--",
        ]  # fmt: skip
    command += run_args
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            pass_fds=(events_fd,),
            # The worker's own process group: a kill of the worker's group ends the run too.
            start_new_session=False,
        )


def relay(
    process: subprocess.Popen[bytes],
    events_fd: int,
    callbacks: TrainingCallbacks,
    stop_grace_seconds: float,
) -> Ending:
    """Pass events to the callbacks until the run closes its pipe or exits; forward a stop."""
    ending = Ending()
    next_check = time.monotonic() + CHECK_SECONDS
    for event in read_events(process, events_fd):
        if event is not None:
            dispatch(event, callbacks, ending)
        now = time.monotonic()
        if now < next_check:
            continue
        next_check = now + CHECK_SECONDS
        if ending.stop_sent_at is None:
            if callbacks.should_stop():
                ask_to_stop(process)
                ending.stop_sent_at = now
        elif now - ending.stop_sent_at > stop_grace_seconds + KILL_AFTER_SECONDS:
            process.kill()
        elif now - ending.stop_sent_at > stop_grace_seconds:
            process.terminate()
    return ending


def read_events(process: subprocess.Popen[bytes], events_fd: int) -> Iterator[Event | None]:
    """The run's events as they come, and None each CHECK_SECONDS without one."""
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(events_fd, selectors.EVENT_READ)
        while True:
            if not selector.select(CHECK_SECONDS):
                # A process the run forked (a loader worker) may still hold the pipe open.
                if process.poll() is not None:
                    return
                yield None
                continue
            chunk = os.read(events_fd, 65536)
            if not chunk:
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                try:
                    yield decode(line)
                except ValueError:
                    logger.warning("ignored a line that is not a training event: %r", line[:200])


def dispatch(event: Event, callbacks: TrainingCallbacks, ending: Ending) -> None:
    match event:
        case StepProgress():
            callbacks.on_step(event)
        case Evaluation(epoch=epoch, metrics=metrics):
            callbacks.on_evaluation(epoch, metrics)
        case CheckpointInfo():
            callbacks.on_checkpoint(event)
        case Notice():
            callbacks.on_notice(event)
        case RunResult():
            ending.result = event
        case RunError():
            ending.error = event


def ask_to_stop(process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(STOP)
        process.stdin.flush()
    except BrokenPipeError:
        pass  # it has just exited; its exit code tells the rest


def wait_or_end(process: subprocess.Popen[bytes], seconds: float) -> int:
    """Wait for the process; past `seconds`, SIGTERM it, then SIGKILL it."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        return process.wait(KILL_AFTER_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def outcome(ending: Ending, returncode: int, log_path: Path) -> RunResult:
    """The run's result; a run stopped on request counts as stopped however it ended."""
    if ending.result is not None:
        if returncode != 0:
            logger.warning("training process exited with %s after its result", returncode)
        return ending.result
    if ending.stop_sent_at is not None:
        return RunResult(stopped=True, best_checkpoint=None)
    message = str(ending.error) if ending.error else describe_exit(returncode)
    logger.error("%s; its output is in %s", message, log_path)
    rank_lost = ending.error is not None and ending.error.type == RANK_LOST
    raise TrainingProcessFailed(message, rank_lost=rank_lost)


def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"training process exited with code {returncode} before reporting a result"
    try:
        killer = signal.Signals(-returncode)
    except ValueError:
        return f"training process was killed by signal {-returncode}"
    if killer in CRASH_SIGNALS:
        return f"training process crashed ({killer.name})"
    hint = "; the machine may have run out of memory" if killer == signal.SIGKILL else ""
    return f"training process was killed by signal {killer.name}{hint}"
