"""The supervisor with the real `python -m worker.training` child, no Celery, no database."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.runs import Recorder, tiny_config
from tests.training.synthetic_folder import write_synthetic_folder
from worker import supervisor
from worker.supervisor import TrainingProcessFailed, run_training_process, wait_or_end
from worker.training.fault_injection import CRASH_FILE_VARIABLE
from worker.training.progress import RunResult

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    write_synthetic_folder(folder, per_class=8)
    return folder


def supervise(dataset_dir: Path, tmp_path: Path, recorder: Recorder, epochs: int) -> RunResult:
    pids: list[int] = []
    result = run_training_process(
        tiny_config(dataset_dir, epochs=epochs, batch_size=8, prepare_workers=1, device="cpu"),
        tmp_path / "checkpoints",
        recorder,
        config_path=tmp_path / "training_config.json",
        log_path=tmp_path / "train.log",
        on_started=pids.append,
    )
    # The run had a process of its own, and that process is gone now.
    assert len(pids) == 1 and pids[0] != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)
    return result


def test_a_run_in_its_own_process_reports_like_one_in_process(
    dataset_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger=supervisor.__name__):
        result = supervise(dataset_dir, tmp_path, recorder, epochs=2)
    assert caplog.records == []  # it also exited cleanly after its result
    assert not result.stopped
    assert result.best_checkpoint is not None
    assert (result.best_checkpoint / "model.safetensors").is_file()
    assert [epoch for epoch, _ in recorder.evaluations] == [0, 1, 2]
    assert [checkpoint.epoch for checkpoint in recorder.checkpoints] == [1, 2]
    assert recorder.checkpoints[-1].path == tmp_path / "checkpoints" / "epoch-2"
    assert recorder.steps[-1].step == recorder.steps[-1].total_steps == 2 * 3
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2]
    assert (tmp_path / "train.log").is_file()


def test_a_stop_reaches_the_process_and_the_run_ends_stopped(
    dataset_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder(stop_after_steps=1)
    result = supervise(dataset_dir, tmp_path, recorder, epochs=500)
    assert result.stopped
    assert recorder.steps[-1].step < recorder.steps[-1].total_steps


@pytest.mark.parametrize(
    ("order", "error"),
    [
        ("SIGSEGV", "training process crashed (SIGSEGV)"),
        ("3", "training process exited with code 3 before reporting a result"),
    ],
)
def test_a_crashed_process_fails_with_a_readable_error(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str, error: str
) -> None:
    crash_file = tmp_path / "crash"
    crash_file.write_text(order)
    monkeypatch.setenv(CRASH_FILE_VARIABLE, str(crash_file))
    recorder = Recorder()
    with pytest.raises(TrainingProcessFailed) as failed:
        supervise(dataset_dir, tmp_path, recorder, epochs=2)
    assert str(failed.value) == error
    assert recorder.evaluations and not recorder.checkpoints  # it died at its first step


def test_a_process_that_ignores_sigterm_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "KILL_AFTER_SECONDS", 0.5)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    assert wait_or_end(stubborn, 0.2) == -signal.SIGKILL
    assert supervisor.describe_exit(-signal.SIGKILL) == (
        "training process was killed by signal SIGKILL; the machine may have run out of memory"
    )
