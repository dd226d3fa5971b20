"""Data parallel on the CPU with gloo: two ranks train what one process trains.

Each test starts real ranks through torch's launcher: through the supervisor, as the worker
does (two ranks on one machine), and as two machines would (two launcher processes meeting at
a rendezvous on loopback).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.core.storage import atomic_write_json
from tests.training.runs import Recorder, tiny_config
from tests.training.synthetic_folder import write_synthetic_folder
from worker.supervisor import TrainingProcessFailed, run_training_process
from worker.training.config import TrainingConfig
from worker.training.fault_injection import CRASH_FILE_VARIABLE
from worker.training.protocol import Evaluation, RunResult, decode
from worker.training.run import run

# The launcher's processes are the subject here (and a killed rank): the fault suite's kind.
pytestmark = pytest.mark.faults

# Sums over a different split of the batch round differently; everything else is the same.
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    write_synthetic_folder(folder, per_class=6)
    return folder


def config_for(dataset_dir: Path, **overrides: object) -> TrainingConfig:
    values: dict[str, object] = {
        "epochs": 2,
        "batch_size": 8,
        "prepare_workers": 1,
        "device": "cpu",
        "augment": "light",
        "distributed_timeout_seconds": 20.0,
    }
    values.update(overrides)
    return tiny_config(dataset_dir, **values)


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_training(
    one: list[dict[str, object]], two: list[dict[str, object]], one_dir: Path, two_dir: Path
) -> None:
    losses = [entry.get("train_loss") for entry in one]
    assert losses[1:] and all(isinstance(loss, float) for loss in losses[1:])
    assert [entry.get("train_loss") for entry in two] == pytest.approx(losses, abs=TOLERANCE)
    reference, weights = final_weights(one_dir), final_weights(two_dir)
    assert reference.keys() == weights.keys()
    moved = max((reference[k] - weights[k]).abs().max().item() for k in reference)
    assert moved < TOLERANCE


def test_two_ranks_train_flyp_like_one_process_and_a_killed_rank_ends_the_attempt(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FLYP's contrastive loss matches only if the ranks gather each other's features.
    single = run(config_for(dataset_dir, method="flyp"), tmp_path / "one")
    config = config_for(dataset_dir, method="flyp", devices=2)
    attempts = tmp_path / "job" / "checkpoints"

    def supervise(attempt: int) -> RunResult:
        return run_training_process(
            config,
            attempts / f"attempt-{attempt}",
            Recorder(),
            config_path=tmp_path / "training_config.json",
            log_path=tmp_path / "train.log",
            earlier_dirs=tuple(attempts / f"attempt-{n}" for n in range(attempt - 1, 0, -1)),
        )

    # One rank is killed at the first step of epoch 2: the other must not wait out a collective.
    crash = tmp_path / "crash"
    crash.write_text("SIGKILL@2")
    monkeypatch.setenv(CRASH_FILE_VARIABLE, str(crash))
    started = time.monotonic()
    with pytest.raises(TrainingProcessFailed) as lost:
        supervise(1)
    # Killed from outside, not broken: the worker will queue the job again.
    assert lost.value.rank_lost
    assert re.fullmatch(r"RankLost: rank [01] of 2 was killed by SIGKILL", str(lost.value))
    assert time.monotonic() - started < config.distributed_timeout_seconds
    assert not crash.exists()  # the fault happened
    assert not (attempts / "attempt-1" / "epoch-2").exists()

    # The next attempt resumes both ranks from epoch 1's checkpoint, or starts afresh where
    # the kill came before that background write reached the disk (test_distributed_job.py
    # kills later, where the checkpoint is certain), and ends where one process did.
    result = supervise(2)
    assert not result.stopped and result.best_checkpoint is not None
    assert_same_training(single.history, result.history, tmp_path / "one" / "epoch-2",
                         attempts / "attempt-2" / "epoch-2")  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_nodes_on_loopback_train_full_fine_tuning_like_one_process(
    dataset_dir: Path, tmp_path: Path
) -> None:
    single = run(config_for(dataset_dir, method="full"), tmp_path / "one")
    config_path = tmp_path / "config.json"
    atomic_write_json(config_path, config_for(dataset_dir, method="full").to_json())
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.training.distributed.launch",
                "--nproc",
                "1",
                "--nnodes",
                "2",
                "--rdzv-endpoint",
                endpoint,
                "--run-id",
                "two-nodes",
                "--",
                "--config",
                str(config_path),
                "--out-dir",
                str(tmp_path / "two"),
            ],
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"node-{node}.log").open("wb"),
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=120)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0]
    # Rank 0 alone reports: one node's stdout carries every event, the other's none.
    events = [[decode(line) for line in out.splitlines() if line.strip()] for out in outputs]
    reporting = [found for found in events if found]
    assert len(reporting) == 1
    results = [event for event in reporting[0] if isinstance(event, RunResult)]
    evaluations = [event.epoch for event in reporting[0] if isinstance(event, Evaluation)]
    assert len(results) == 1 and evaluations[:3] == [0, 1, 2]
    assert_same_training(
        single.history,
        results[0].history,
        tmp_path / "one" / "epoch-2",
        tmp_path / "two" / "epoch-2",
    )


def test_gradient_accumulation_reaches_the_global_batch_on_two_ranks(
    dataset_dir: Path, tmp_path: Path
) -> None:
    # Full fine-tuning's loss is a mean over images: two accumulated halves of a batch of 8,
    # split over two ranks, step exactly as the batch of 8 does in one process (one process
    # accumulating: tests/training/test_methods.py).
    whole = run(config_for(dataset_dir, method="full"), tmp_path / "whole")
    config = config_for(dataset_dir, method="full", batch_size=4, grad_accum_steps=2, devices=2)
    result = run_training_process(
        config,
        tmp_path / "ranks",
        Recorder(),
        config_path=tmp_path / "training_config.json",
        log_path=tmp_path / "train.log",
    )
    assert_same_training(whole.history, result.history, tmp_path / "whole" / "epoch-2",
                         tmp_path / "ranks" / "epoch-2")  # fmt: skip
