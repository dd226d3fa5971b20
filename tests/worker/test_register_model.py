"""Registering a model copies its checkpoint whole or leaves nothing in the models folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.core.config import Settings
from app.orm import Job
from worker.job_runner import register_model
from worker.training.progress import RunResult


def test_a_copy_that_fails_half_way_leaves_no_staging_folder(tmp_path: Path) -> None:
    checkpoint = tmp_path / "epoch-1"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    # A file that vanished under the copy: copytree copies the rest, then raises.
    (checkpoint / "tokenizer.json").symlink_to(tmp_path / "gone")
    settings = Settings(data_dir=tmp_path / "data")
    job = Job(id="job-1", tenant="t", name="n", base_model="tiny-clip")
    with pytest.raises(shutil.Error):
        register_model(settings, job, "owner", RunResult(stopped=False, best_checkpoint=checkpoint))
    assert list((tmp_path / "data" / "models").iterdir()) == []
