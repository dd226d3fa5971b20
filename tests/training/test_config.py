"""The training config's JSON round trip, which hands a job's config to its training process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.training.config import TrainingConfig


def test_a_config_survives_json_with_its_paths_as_paths(tmp_path: Path) -> None:
    config = TrainingConfig(
        base_model="tiny-clip",
        dataset_dir=tmp_path / "dataset",
        epochs=3,
        learning_rate=2e-3,
        augment=False,
        base_models_dir=tmp_path / "bases",
    )
    restored = TrainingConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert restored == config
    assert isinstance(restored.dataset_dir, Path) and isinstance(restored.base_models_dir, Path)


def test_an_unset_optional_path_stays_none(tmp_path: Path) -> None:
    config = TrainingConfig(base_model="tiny-clip", dataset_dir=tmp_path)
    assert TrainingConfig.from_json(config.to_json()).base_models_dir is None


def test_an_unknown_field_is_refused_by_name(tmp_path: Path) -> None:
    data = {**TrainingConfig(base_model="tiny-clip", dataset_dir=tmp_path).to_json(), "epoks": 3}
    with pytest.raises(ValueError, match="TrainingConfig has no field 'epoks'"):
        TrainingConfig.from_json(data)


def test_a_missing_required_field_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="TrainingConfig needs field 'dataset_dir'"):
        TrainingConfig.from_json({"base_model": "tiny-clip"})
