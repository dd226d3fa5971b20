"""The training library alone: no queue, no database, the tiny model on synthetic shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import CLIPModel

from app.ml.model_metadata import read_metadata
from tests.training.runs import Recorder, tiny_config
from tests.training.synthetic_folder import write_synthetic_folder
from worker.training.checkpoints.folder import read_trainer_state
from worker.training.run import run


@pytest.fixture(scope="module")
def classification_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("classification")
    write_synthetic_folder(folder, per_class=40)
    return folder


def test_classification_run_learns_and_keeps_best_and_latest(
    classification_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    result = run(tiny_config(classification_dir), tmp_path, recorder)

    assert not result.stopped
    epochs_evaluated = [epoch for epoch, _ in recorder.evaluations]
    assert epochs_evaluated == [0, 1, 2, 3, 4]
    base_accuracy = recorder.evaluations[0][1]["val_accuracy"]
    assert base_accuracy < 0.6  # random init on 4 classes: near chance
    assert result.best_metrics["val_accuracy"] >= 0.9
    assert result.best_checkpoint is not None
    # Only the best and the latest epoch stay on disk, and no half-written folder.
    kept = {folder.name for folder in tmp_path.iterdir()}
    assert kept == {result.best_checkpoint.name, "epoch-4"}
    # Progress is reported every step, ending at the total.
    assert recorder.steps[-1].step == recorder.steps[-1].total_steps == 4 * 4
    assert recorder.steps[-1].fraction == 1.0
    assert all(step.samples_per_second > 0 for step in recorder.steps)


def test_best_checkpoint_loads_with_plain_transformers(
    classification_dir: Path, tmp_path: Path
) -> None:
    result = run(tiny_config(classification_dir, epochs=2), tmp_path)
    assert result.best_checkpoint is not None
    files = {path.name for path in result.best_checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "clipft.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    clip = CLIPModel.from_pretrained(result.best_checkpoint)
    assert clip.config.vision_config.image_size == 32
    metadata = read_metadata(result.best_checkpoint)
    assert metadata.labels == ["blue triangle", "green square", "red circle", "yellow circle"]
    assert metadata.prompt_template == "a photo of a {}."


def test_captions_run_improves_retrieval(tmp_path: Path) -> None:
    dataset_dir = tmp_path / "captions"
    write_synthetic_folder(dataset_dir, kind="captions", per_class=40)
    recorder = Recorder()
    result = run(tiny_config(dataset_dir, epochs=4), tmp_path / "out", recorder)
    base = recorder.evaluations[0][1]
    assert set(base) >= {
        "val_image_to_text_recall_at_1",
        "val_text_to_image_recall_at_1",
        "val_image_to_text_recall_at_5",
        "val_text_to_image_recall_at_5",
    }
    assert result.best_metrics["val_mean_recall_at_1"] >= 0.9
    assert result.best_metrics["val_mean_recall_at_1"] > base["val_mean_recall_at_1"]
    # The report compares recall both ways, before and after; captions have no classes.
    assert result.report is not None and result.report["primary_metric"] == "val_mean_recall_at_1"
    assert result.report["base"] == {"metrics": base}
    assert result.report["fine_tuned"]["metrics"]["val_text_to_image_recall_at_5"] >= 0.9
    assert result.report["retention"] is None and result.report["classes"] == []


def test_should_stop_ends_the_run_at_the_next_step(
    classification_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder(stop_after_steps=3)
    result = run(tiny_config(classification_dir, epochs=10), tmp_path, recorder)
    assert result.stopped
    assert len(recorder.steps) == 3
    assert recorder.checkpoints == []


def test_a_second_run_resumes_from_the_latest_checkpoint(
    classification_dir: Path, tmp_path: Path
) -> None:
    run(tiny_config(classification_dir, epochs=2), tmp_path)
    recorder = Recorder()
    result = run(tiny_config(classification_dir, epochs=3), tmp_path, recorder)
    # The base model is not evaluated again and epochs 1-2 are not trained again.
    assert [epoch for epoch, _ in recorder.evaluations] == [3]
    assert recorder.steps[0].step == 2 * 4 + 1
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2, 3]
    assert read_trainer_state(tmp_path / "epoch-3").step == 3 * 4


def test_only_an_unfinished_runs_checkpoints_keep_the_optimizer_state(
    classification_dir: Path, tmp_path: Path
) -> None:
    # Stopped in epoch 3 of 3: the checkpoints of epochs 1 and 2 are resume points.
    run(tiny_config(classification_dir, epochs=3), tmp_path, Recorder(stop_after_steps=9))
    assert (tmp_path / "epoch-2" / "optimizer.safetensors").is_file()
    assert not read_trainer_state(tmp_path / "epoch-2").complete
    recorder = Recorder()
    result = run(tiny_config(classification_dir, epochs=3), tmp_path, recorder)
    assert recorder.steps[0].step == 2 * 4 + 1
    # The last epoch's checkpoint: nothing would ever load AdamW's state from it.
    last = tmp_path / "epoch-3"
    assert read_trainer_state(last).complete
    assert not (last / "optimizer.safetensors").exists()
    assert not (last / "optimizer_groups.json").exists()
    assert result.report is not None

    # A run that dies after its last checkpoint concludes from it, training nothing again.
    again = Recorder()
    concluded = run(tiny_config(classification_dir, epochs=3), tmp_path, again)
    assert again.steps == [] and again.evaluations == []
    assert concluded.report is not None
    assert concluded.report["fine_tuned"]["metrics"] == result.report["fine_tuned"]["metrics"]


def test_same_seed_gives_same_weights(classification_dir: Path, tmp_path: Path) -> None:
    first = run(tiny_config(classification_dir, epochs=1, augment="none"), tmp_path / "a")
    second = run(tiny_config(classification_dir, epochs=1, augment="none"), tmp_path / "b")
    assert first.best_checkpoint and second.best_checkpoint
    weights_a = CLIPModel.from_pretrained(first.best_checkpoint).state_dict()
    weights_b = CLIPModel.from_pretrained(second.best_checkpoint).state_dict()
    assert all(torch.allclose(weights_a[name], weights_b[name]) for name in weights_a)


def test_a_local_base_model_folder_is_fine_tuned_from_its_weights(
    classification_dir: Path, tmp_path: Path
) -> None:
    # A user's offline base model: any save_pretrained CLIP folder under base_models_dir.
    from app.ml.base_models import LoadedClip
    from app.ml.model_files import save_clip_folder
    from app.ml.model_metadata import ModelMetadata
    from app.ml.tiny_clip import build_tiny_clip

    first = run(tiny_config(classification_dir, epochs=3), tmp_path / "first")
    assert first.best_checkpoint is not None
    trained = CLIPModel.from_pretrained(first.best_checkpoint)
    _, tokenizer, image_processor = build_tiny_clip()
    metadata = ModelMetadata(kind="classification", labels=[], prompt_template="{}", base_model="x")
    save_clip_folder(
        LoadedClip(trained, tokenizer, image_processor), metadata, tmp_path / "base" / "my-clip"
    )
    recorder = Recorder()
    run(
        tiny_config(
            classification_dir, epochs=1, base_model="my-clip", base_models_dir=tmp_path / "base"
        ),
        tmp_path / "second",
        recorder,
    )
    # Epoch 0 evaluates the local folder's weights: already trained, unlike tiny-clip's init.
    assert recorder.evaluations[0][1]["val_accuracy"] >= 0.75


def test_the_loop_syncs_with_the_host_only_at_progress_points(
    classification_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `.item()` and no cancel check per step: both happen about once a second."""
    item_calls = 0
    original_item = torch.Tensor.item

    def counting_item(tensor: torch.Tensor) -> Any:
        nonlocal item_calls
        item_calls += 1
        return original_item(tensor)

    class CountingRecorder(Recorder):
        stop_checks = 0

        def should_stop(self) -> bool:
            CountingRecorder.stop_checks += 1
            return False

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    recorder = CountingRecorder()
    config = tiny_config(classification_dir, epochs=2, batch_size=4, progress_interval_seconds=3600)
    result = run(config, tmp_path, recorder)
    steps = 2 * 30
    assert recorder.steps[-1].step == steps
    # The first step and the last of each epoch report; nothing in between within the interval.
    assert [progress.step for progress in recorder.steps] == [1, 30, 31, 60]
    assert CountingRecorder.stop_checks == len(recorder.steps)
    # Reads of the loss at those points, plus the evaluations' metrics: far fewer than steps.
    assert item_calls < 20 < steps
    assert result.best_metrics["val_accuracy"] > 0.5


def test_same_seed_gives_same_weights_with_augmentation(
    classification_dir: Path, tmp_path: Path
) -> None:
    """Each sample's crop and flip come from (seed, epoch, index), never a shared generator."""
    runs = {
        name: run(tiny_config(classification_dir, epochs=2, seed=seed), tmp_path / name)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    }
    weights = {
        name: CLIPModel.from_pretrained(str(result.best_checkpoint)).state_dict()
        for name, result in runs.items()
    }
    assert all(torch.equal(weights["a"][key], weights["b"][key]) for key in weights["a"])
    assert not all(torch.equal(weights["a"][key], weights["c"][key]) for key in weights["a"])
