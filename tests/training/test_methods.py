"""Each fine-tuning method through the real training run: what trains, what is saved, served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPModel

from app.inference.cache import load_cached_model
from app.inference.engine import label_probabilities
from app.ml.class_head import HEAD_FILE_NAME, ClassHead
from app.ml.encode import encode_images
from app.ml.manifest import read_manifest
from app.ml.model_metadata import read_metadata
from app.ml.preprocess import normalize, resize_and_crop
from app.ml.tiny_clip import build_tiny_clip
from tests.training.runs import Recorder, tiny_config
from worker.training.methods import METHODS
from worker.training.methods.base import TEXT_PARTS, VISION_PARTS
from worker.training.methods.lora import ADAPTER_DIR_NAME, ADAPTER_WEIGHTS_NAME
from worker.training.run import run

ATTENTION_WEIGHTS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight")


@pytest.fixture(scope="module")
def base_weights() -> dict[str, torch.Tensor]:
    return build_tiny_clip()[0].state_dict()


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    return CLIPModel.from_pretrained(folder).state_dict()


def changed_names(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, value in after.items() if not torch.equal(value, before[name])}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_end_to_end_and_saves_a_plain_clip_folder(
    method: str, small_classification_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    epochs = 3
    config = tiny_config(
        small_classification_dir, method=method, epochs=epochs, head_learning_rate=0.05
    )
    result = run(config, tmp_path, recorder)
    assert not result.stopped and result.best_checkpoint is not None
    assert [epoch for epoch, _ in recorder.evaluations] == list(range(epochs + 1))
    losses = [entry["train_loss"] for entry in result.history[1:]]
    assert losses[-1] < losses[0], losses
    metadata = read_metadata(result.best_checkpoint)
    assert metadata.method == method
    assert saved_weights(result.best_checkpoint).keys() == build_tiny_clip()[0].state_dict().keys()
    assert result.report is not None and result.report["method"] == method
    trained = result.report["trainable_parameters"]
    total = sum(value.numel() for value in build_tiny_clip()[0].parameters())
    head = 4 * 64 + 4  # one row and one bias per class over the 64 projected features
    expected = {
        "full": {"train": total},
        "flyp": {"train": total},
        "linear_probe": {"train": head},
        "lora": trained,  # checked below: the adapters alone
    }.get(method)
    if method == "lp_ft":
        vision = sum(
            value.numel()
            for name, value in build_tiny_clip()[0].named_parameters()
            if name.startswith(VISION_PARTS)
        )
        expected = {"probe": head, "fine-tune": vision + head}
    assert trained == expected
    if method == "lora":
        assert 0 < trained["train"] < total / 10


def test_linear_probe_leaves_clip_untouched_and_serving_answers_with_its_head(
    small_classification_dir: Path, tmp_path: Path, base_weights: dict[str, torch.Tensor]
) -> None:
    config = tiny_config(
        small_classification_dir, method="linear_probe", epochs=3, head_learning_rate=0.05
    )
    result = run(config, tmp_path)
    assert result.best_checkpoint is not None
    assert changed_names(base_weights, saved_weights(result.best_checkpoint)) == set()
    metadata = read_metadata(result.best_checkpoint)
    assert metadata.head_file == HEAD_FILE_NAME
    head = ClassHead.load(result.best_checkpoint)
    assert head.weight.shape == (4, 64)

    # Serving classifies with the trained head, not with the class prompts.
    cached = load_cached_model("probe", result.best_checkpoint, torch.device("cpu"), "fp32")
    manifest = read_manifest(small_classification_dir)
    images = [Image.open(small_classification_dir / item.file) for item in manifest.items[:8]]
    pixels = torch.stack([resize_and_crop(image, cached.pixel_spec) for image in images])
    served = label_probabilities(cached, pixels).probabilities
    with torch.no_grad():
        features = encode_images(cached.loaded_clip.clip, normalize(pixels, cached.pixel_spec))
        # Divided by the temperature the run fitted on val (calibration.py) and stored.
        expected = (head(features) / (metadata.temperature or 1.0)).softmax(dim=-1)
        zero_shot = ClassHead.zero_shot(cached.label_embeddings, cached.logit_scale)  # type: ignore[arg-type]
        prompts_answer = zero_shot(features).softmax(dim=-1)
    assert torch.allclose(served, expected, atol=1e-5)
    assert not torch.allclose(served, prompts_answer, atol=1e-3)


def test_lp_ft_probes_first_then_tunes_the_image_tower_with_the_head(
    small_classification_dir: Path, tmp_path: Path, base_weights: dict[str, torch.Tensor]
) -> None:
    recorder = Recorder()
    config = tiny_config(
        small_classification_dir,
        method="lp_ft",
        epochs=3,
        lp_ft_probe_epochs=1,
        head_learning_rate=0.01,
        learning_rate=5e-4,
    )
    result = run(config, tmp_path, recorder)
    assert [(notice.type, notice.message) for notice in recorder.notices] == [
        ("phase", "probe phase from epoch 1"),
        ("phase", "fine-tune phase from epoch 2"),
    ]
    assert (tmp_path / "epoch-3" / HEAD_FILE_NAME).is_file()
    changed = changed_names(base_weights, saved_weights(tmp_path / "epoch-3"))
    assert changed and all(name.startswith(VISION_PARTS) for name in changed)
    # The fine-tune phase runs at the lower `learning_rate`, the probe at `head_learning_rate`.
    rates = [step.learning_rate for step in recorder.steps]
    assert max(rates[:3]) == pytest.approx(0.01) and max(rates[3:]) == pytest.approx(5e-4)
    assert result.report is not None and result.report["method"] == "lp_ft"


@pytest.mark.parametrize(
    ("method", "freeze"), [("full", "text"), ("full", "vision"), ("lora", "text")]
)
def test_a_frozen_tower_keeps_its_weights(
    method: str,
    freeze: str,
    small_classification_dir: Path,
    tmp_path: Path,
    base_weights: dict[str, torch.Tensor],
) -> None:
    config = tiny_config(small_classification_dir, method=method, freeze=freeze, epochs=1)
    result = run(config, tmp_path)
    assert result.best_checkpoint is not None
    changed = changed_names(base_weights, saved_weights(result.best_checkpoint))
    frozen, trained = (TEXT_PARTS, VISION_PARTS) if freeze == "text" else (VISION_PARTS, TEXT_PARTS)
    assert changed and not any(name.startswith(frozen) for name in changed)
    assert any(name.startswith(trained) for name in changed)


def test_lora_registers_merged_weights_keeps_the_adapter_and_resumes_from_it(
    small_classification_dir: Path, tmp_path: Path, base_weights: dict[str, torch.Tensor]
) -> None:
    run(tiny_config(small_classification_dir, method="lora", epochs=1, lora_rank=4), tmp_path)
    first = tmp_path / "epoch-1"
    assert (first / ADAPTER_DIR_NAME / ADAPTER_WEIGHTS_NAME).is_file()
    # Only the attention projections differ from the base: the adapters, merged into them.
    changed = changed_names(base_weights, saved_weights(first))
    assert changed and all(name.endswith(ATTENTION_WEIGHTS) for name in changed)

    recorder = Recorder()
    result = run(
        tiny_config(small_classification_dir, method="lora", epochs=2, lora_rank=4),
        tmp_path,
        recorder,
    )
    assert [epoch for epoch, _ in recorder.evaluations] == [2]
    assert result.history[-1]["epoch"] == 2
    second = saved_weights(tmp_path / "epoch-2")
    # The resumed run continued from the adapter: its weights moved on from epoch 1's.
    assert changed_names(saved_weights(first), second) <= changed
    assert changed_names(saved_weights(first), second)


def test_early_stopping_ends_the_run_says_why_and_stays_stopped(
    small_classification_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    # No epoch can beat the base model by 0.9 accuracy: patience runs out after epoch 2.
    config = tiny_config(
        small_classification_dir, epochs=6, early_stopping_patience=2, early_stopping_min_delta=0.9
    )
    result = run(config, tmp_path, recorder)
    assert [epoch for epoch, _ in recorder.evaluations] == [0, 1, 2]
    assert [notice.type for notice in recorder.notices] == ["early_stop"]
    reason = recorder.notices[0].message
    assert reason.startswith("stopped early after epoch 2: val_accuracy has not improved")
    assert result.report is not None and result.report["stopped_early"] == reason
    assert result.report["epochs_trained"] == 2
    # The best epoch is the model, whichever it was.
    best = max(result.history[1:], key=lambda entry: entry["val_accuracy"])
    assert (
        result.best_checkpoint is not None
        and result.best_checkpoint.name == f"epoch-{best['epoch']}"
    )

    again = Recorder()
    run(config, tmp_path, again)
    assert again.steps == [] and again.evaluations == []


def test_gradient_accumulation_matches_one_bigger_batch(
    small_classification_dir: Path, tmp_path: Path
) -> None:
    # 72 training images: batches of 16 in pairs are the batches of 32 (same seeded order).
    # Cross-entropy over class prompts is a mean over images, so two halves add up to the
    # whole; a contrastive loss (flyp) would not, its negatives being the rest of the batch.
    big = Recorder()
    config = tiny_config(small_classification_dir, method="full", epochs=2, batch_size=32)
    run(config, tmp_path / "big", big)
    small = Recorder()
    config = tiny_config(
        small_classification_dir, method="full", epochs=2, batch_size=16, grad_accum_steps=2
    )
    run(config, tmp_path / "small", small)
    assert small.steps[-1].total_steps == big.steps[-1].total_steps == 2 * 3
    assert small.steps[-1].step == 2 * 3
    weights_big = saved_weights(tmp_path / "big" / "epoch-2")
    weights_small = saved_weights(tmp_path / "small" / "epoch-2")
    for name, value in weights_big.items():
        assert torch.allclose(value, weights_small[name], atol=1e-4), name
