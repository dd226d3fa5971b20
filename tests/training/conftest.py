"""Small ready dataset folders the training tests share (written once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.synthetic_folder import write_synthetic_folder

CONTROL_CLASSES = ("purple square", "cyan circle", "yellow triangle")


@pytest.fixture(scope="session")
def small_classification_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 shape classes, 24 images each: 72 train and 24 val."""
    folder = tmp_path_factory.mktemp("small-classification")
    write_synthetic_folder(folder, per_class=24)
    return folder


@pytest.fixture(scope="session")
def control_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other shapes in other colours, never trained on: the control set."""
    folder = tmp_path_factory.mktemp("control")
    write_synthetic_folder(folder, classes=CONTROL_CLASSES, per_class=12, seed=3)
    return folder
