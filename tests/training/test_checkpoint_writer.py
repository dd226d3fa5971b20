"""Checkpoints written in the background hold the state at the moment they were taken."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.ml.base_models import LoadedClip
from app.ml.model_files import load_model_folder
from app.ml.model_metadata import ModelMetadata
from app.ml.tiny_clip import build_tiny_clip
from worker.training.checkpoints.folder import (
    OPTIMIZER_TENSORS_NAME,
    CheckpointSnapshot,
    OptimizerSnapshot,
)
from worker.training.checkpoints.snapshot import ClipFolderSnapshot, host_copy
from worker.training.checkpoints.writer import CheckpointWriter


def snapshot_of(loaded: LoadedClip, optimizer: torch.optim.Optimizer) -> CheckpointSnapshot:
    metadata = ModelMetadata(
        kind="classification", labels=["a"], prompt_template="{}", base_model="tiny-clip"
    )
    return CheckpointSnapshot(
        model=ClipFolderSnapshot(
            loaded=loaded, weights=host_copy(loaded.clip.state_dict()), metadata=metadata
        ),
        optimizer=OptimizerSnapshot.take(optimizer),
        trainer_state="{}",
        config="{}",
    )


def trained_tiny_clip() -> tuple[LoadedClip, torch.optim.Optimizer]:
    clip, tokenizer, processor = build_tiny_clip()
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1e-3)
    for parameter in clip.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    return LoadedClip(clip, tokenizer, processor), optimizer


def test_a_background_checkpoint_holds_the_weights_of_its_snapshot_not_later_ones(
    tmp_path: Path,
) -> None:
    loaded, optimizer = trained_tiny_clip()
    expected = {name: value.clone() for name, value in loaded.clip.state_dict().items()}
    expected_moment = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    snapshot = snapshot_of(loaded, optimizer)
    # Training goes on in place before the write starts.
    with torch.no_grad():
        for parameter in loaded.clip.parameters():
            parameter.add_(1.0)
    optimizer.state_dict()["state"][0]["exp_avg"].add_(1.0)

    writer = CheckpointWriter()
    done: list[bool] = []
    writer.submit(snapshot, tmp_path / "epoch-1", lambda: done.append(True))
    writer.finish()
    writer.close()

    assert done == [True]
    written, _ = load_model_folder(tmp_path / "epoch-1")
    for name, value in written.clip.state_dict().items():
        assert torch.equal(value, expected[name]), name
    moments = load_file(str(tmp_path / "epoch-1" / OPTIMIZER_TENSORS_NAME))
    assert torch.equal(moments["0.exp_avg"], expected_moment)
    assert not list(tmp_path.glob(".epoch-1.tmp-*"))


def test_what_follows_a_write_runs_on_the_callers_thread_once_the_folder_exists(
    tmp_path: Path,
) -> None:
    loaded, optimizer = trained_tiny_clip()
    writer = CheckpointWriter()
    seen: list[tuple[bool, str]] = []
    folder = tmp_path / "epoch-1"
    writer.submit(
        snapshot_of(loaded, optimizer),
        folder,
        lambda: seen.append((folder.is_dir(), threading.current_thread().name)),
    )
    # A second submit waits for the first: one snapshot in host memory at a time.
    writer.submit(snapshot_of(loaded, optimizer), tmp_path / "epoch-2", lambda: None)
    assert seen == [(True, threading.current_thread().name)]
    writer.finish()
    writer.close()
    assert (tmp_path / "epoch-2" / "model.safetensors").is_file()


def test_a_failed_background_write_raises_in_the_run_and_leaves_no_folder(
    tmp_path: Path,
) -> None:
    loaded, optimizer = trained_tiny_clip()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoints folder should be")
    writer = CheckpointWriter()
    followed: list[bool] = []
    writer.submit(
        snapshot_of(loaded, optimizer), blocker / "epoch-1", lambda: followed.append(True)
    )
    with pytest.raises(OSError):
        writer.finish()
    writer.close()
    assert followed == []
    assert blocker.read_text().startswith("a file")
    # The failure is reported once; the writer is usable afterwards.
    writer.finish()
