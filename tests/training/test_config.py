"""The training config: its JSON round trip, and jobs stored by earlier versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.ml.hyperparameters import Hyperparameters
from worker.training.config import TrainingConfig

# What `POST /jobs` stored before methods, schedules and template lists existed.
FIRST_VERSION_HYPERPARAMETERS = {
    "epochs": 3,
    "batch_size": 16,
    "learning_rate": 0.002,
    "weight_decay": 0.05,
    "warmup_ratio": 0.1,
    "seed": 7,
    "prompt_template": "a picture of a {}.",
    "augment": True,
}


def test_a_config_survives_json_with_its_paths_as_paths(tmp_path: Path) -> None:
    config = TrainingConfig(
        base_model="tiny-clip",
        dataset_dir=tmp_path / "dataset",
        epochs=3,
        learning_rate=2e-3,
        augment="none",
        method="lora",
        lora_rank=4,
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
    with pytest.raises(ValueError, match="TrainingConfig: epoks: Extra inputs are not permitted"):
        TrainingConfig.from_json(data)


def test_a_missing_required_field_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="dataset_dir: Field required"):
        TrainingConfig.from_json({"base_model": "tiny-clip"})


def test_a_job_stored_before_new_fields_existed_loads_with_their_defaults(tmp_path: Path) -> None:
    config = TrainingConfig.for_job(
        FIRST_VERSION_HYPERPARAMETERS, base_model="tiny-clip", dataset_dir=tmp_path
    )
    assert config.epochs == 3 and config.learning_rate == 0.002 and config.seed == 7
    # The old spellings mean what they meant: a flip-and-crop boolean, one template.
    assert config.augment == "standard" and config.flips
    assert config.prompt_templates == ["a picture of a {}."]
    # Fields added later take their defaults.
    assert config.method == "full" and config.lr_schedule == "cosine"
    assert config.early_stopping_patience is None and config.grad_accum_steps == 1


def test_hyperparameters_resolved_today_read_back_unchanged() -> None:
    resolved = Hyperparameters.model_validate(FIRST_VERSION_HYPERPARAMETERS).model_dump()
    assert Hyperparameters.model_validate(resolved).model_dump() == resolved
    assert "prompt_template" not in resolved and resolved["augment"] == "standard"


def test_every_hyperparameter_is_a_training_config_field_with_the_same_default() -> None:
    for name, field in Hyperparameters.model_fields.items():
        assert TrainingConfig.model_fields[name].default == field.default, name
