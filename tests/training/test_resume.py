"""Resuming: the newest checkpoint that verifies, from this attempt's folder or an earlier one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.training.runs import Recorder, tiny_config
from worker.training.checkpoints.folder import read_trainer_state
from worker.training.checkpoints.resume import checkpoint_problem
from worker.training.run import run

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one_and_names_the_file(
    small_classification_dir: Path, tmp_path: Path
) -> None:
    run(tiny_config(small_classification_dir, epochs=1), tmp_path)
    shutil.copytree(tmp_path / "epoch-1", tmp_path / "kept")
    run(tiny_config(small_classification_dir, epochs=2), tmp_path)
    # Epoch 1 is back whether or not pruning kept it; then the latest one's weights break.
    shutil.rmtree(tmp_path / "epoch-1", ignore_errors=True)
    (tmp_path / "kept").rename(tmp_path / "epoch-1")
    truncate(tmp_path / "epoch-2" / "model.safetensors", keep=4096)
    assert "model.safetensors does not read back" in str(checkpoint_problem(tmp_path / "epoch-2"))

    recorder = Recorder()
    run(tiny_config(small_classification_dir, epochs=3), tmp_path, recorder)
    notices = [(notice.type, notice.message) for notice in recorder.notices]
    assert notices[0][0] == "checkpoint_unusable"
    assert notices[0][1].startswith("checkpoint epoch-2 is unusable: model.safetensors")
    assert notices[1] == ("resume", "resuming from epoch-1")
    assert [epoch for epoch, _ in recorder.evaluations] == [2, 3]


def test_nothing_usable_means_a_fresh_start(small_classification_dir: Path, tmp_path: Path) -> None:
    run(tiny_config(small_classification_dir, epochs=1), tmp_path)
    truncate(tmp_path / "epoch-1" / "trainer_state.json", keep=10)
    recorder = Recorder()
    run(tiny_config(small_classification_dir, epochs=1), tmp_path, recorder)
    assert [notice.type for notice in recorder.notices] == ["checkpoint_unusable"]
    assert "trainer_state.json does not read back" in recorder.notices[0].message
    assert [epoch for epoch, _ in recorder.evaluations] == [0, 1]


def test_an_attempt_adopts_an_earlier_attempts_checkpoint_and_owns_what_it_needs(
    small_classification_dir: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "attempt-1", tmp_path / "attempt-2"
    run(tiny_config(small_classification_dir, epochs=2), first)
    recorder = Recorder()
    # The first attempt finished its epochs but died before registering: nothing left to train.
    result = run(tiny_config(small_classification_dir, epochs=2), second, recorder, [first])
    assert recorder.evaluations == [] and recorder.steps == []
    assert ("resume", "resuming from epoch-2") in [(n.type, n.message) for n in recorder.notices]
    # The adopted files are hard links: no copy of the weights, and nothing shared is edited.
    adopted = second / "epoch-2" / "model.safetensors"
    assert adopted.stat().st_ino == (first / "epoch-2" / "model.safetensors").stat().st_ino
    # Everything the second attempt refers to is in its own folder, the best epoch included.
    best = read_trainer_state(second / "epoch-2").best_checkpoint
    assert best is not None and (second / best).is_dir()
    assert result.best_checkpoint == second / best


def test_an_earlier_attempt_pruning_its_own_folder_cannot_hurt_a_later_one(
    small_classification_dir: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "attempt-1", tmp_path / "attempt-2"
    run(tiny_config(small_classification_dir, epochs=2), first)
    run(tiny_config(small_classification_dir, epochs=3), second, None, [first])
    # The stale first attempt wakes up, goes on and prunes (here: deletes) its whole folder.
    for path in sorted(first.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    result = run(tiny_config(small_classification_dir, epochs=4), second, None, [first])
    assert result.best_checkpoint is not None and result.best_checkpoint.is_dir()
    assert (second / "epoch-4").is_dir()
