"""What fine-tuning costs: tiny-clip-shapes, which knows 18 shapes zero-shot, learns digits.

Every run trains through the real training library at the same rate and schedule, with
held-out shapes as the control set. Measured here (bench/methods.py has the whole table):
full fine-tuning reaches about 0.6 on held-out digits and leaves about 0.17 of the shapes
(from 0.99); a frozen image tower keeps about 0.7 and LoRA about 0.3 at the same rate, both
learning fewer digits; a linear probe changes no zero-shot answer at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ml.base_models import load_base_model
from app.ml.manifest import read_manifest
from app.ml.model_files import load_model_folder
from app.ml.synthetic import SHAPE_CLASSES, make_images
from app.ml.synthetic_digits import make_digit_images
from app.ml.tiny_clip import TINY_CLIP_SHAPES_NAME
from app.ml.zero_shot import zero_shot_predictions
from tests.training.runs import tiny_config
from tests.training.synthetic_folder import write_image_folder
from worker.training.progress import RunResult
from worker.training.run import run

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {"method": "full"},
    "freeze vision": {"method": "full", "freeze": "vision"},
    "lora": {"method": "lora"},
    "linear_probe": {"method": "linear_probe", "head_learning_rate": 1e-2},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forgetting")
    write_image_folder(root / "digits", make_digit_images(per_class=200, seed=0))
    write_image_folder(
        root / "held-out shapes", make_images(SHAPE_CLASSES, per_class=15, seed=7_002)
    )
    return {"digits": root / "digits", "shapes": root / "held-out shapes", "runs": root}


@pytest.fixture(scope="module")
def results(folders: dict[str, Path]) -> dict[str, RunResult]:
    outcomes = {}
    for name, overrides in VARIANTS.items():
        config = tiny_config(
            folders["digits"],
            base_model=TINY_CLIP_SHAPES_NAME,
            control_dataset_dir=folders["shapes"],
            epochs=10,
            learning_rate=1e-3,
            weight_decay=0.05,
            **overrides,
        )
        outcomes[name] = run(config, folders["runs"] / name.replace(" ", "-"))
    return outcomes


def retention(result: RunResult) -> dict[str, float]:
    assert result.report is not None
    return dict(result.report["retention"])


def test_full_fine_tuning_learns_digits_and_forgets_shapes(results: dict[str, RunResult]) -> None:
    full = results["full"]
    assert full.report is not None
    assert full.report["fine_tuned"]["metrics"]["val_accuracy"] >= 0.45
    assert retention(full)["zero_shot_accuracy_before"] >= 0.9
    assert retention(full)["zero_shot_accuracy_after"] <= 0.4


def test_a_linear_probe_keeps_every_zero_shot_answer_on_shapes(
    results: dict[str, RunResult], folders: dict[str, Path]
) -> None:
    probe = results["linear_probe"]
    assert probe.best_checkpoint is not None and probe.report is not None
    assert retention(probe)["change"] == 0
    # Image by image, not only in total: the probe's model answers shapes as the base does.
    manifest = read_manifest(folders["shapes"])
    images = [Image.open(folders["shapes"] / item.file) for item in manifest.items]
    base = load_base_model(TINY_CLIP_SHAPES_NAME, None)
    probed, _ = load_model_folder(probe.best_checkpoint)
    assert zero_shot_predictions(probed, images, SHAPE_CLASSES) == zero_shot_predictions(
        base, images, SHAPE_CLASSES
    )
    # And it did learn something about digits.
    assert probe.report["gain"] > 0


@pytest.mark.parametrize("name", ["freeze vision", "lora"])
def test_a_frozen_tower_and_lora_keep_more_shapes_than_full_at_the_same_rate(
    results: dict[str, RunResult], name: str
) -> None:
    kept, full = retention(results[name]), retention(results["full"])
    assert kept["zero_shot_accuracy_after"] >= full["zero_shot_accuracy_after"] + 0.05
