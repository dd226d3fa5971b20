"""The job report: base against registered model, retention on a control set, WiSE-FT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from app.ml.encode import class_prompts, encode_images, encode_texts
from app.ml.manifest import read_manifest
from app.ml.model_metadata import read_metadata
from app.ml.tiny_clip import build_tiny_clip
from tests.training.runs import Recorder, tiny_config
from worker.training.run import run
from worker.training.wise_ft import WISE_FT_DIR_NAME


@torch.no_grad()
def zero_shot_by_hand(clip: CLIPModel, processor: CLIPProcessor, dataset_dir: Path) -> float:
    """Accuracy over every image of the set with the plain processor, prompt and argmax."""
    manifest = read_manifest(dataset_dir)
    images = [Image.open(dataset_dir / item.file).convert("RGB") for item in manifest.items]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image_features = encode_images(clip.eval(), pixels)
    prompts = class_prompts(manifest.classes, "a photo of a {}.")
    text_features = encode_texts(clip, processor.tokenizer, prompts, torch.device("cpu"))
    predicted = (image_features @ text_features.T).argmax(dim=1).tolist()
    truth = [manifest.classes.index(str(item.label)) for item in manifest.items]
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def test_report_compares_base_and_registered_model_and_retention_matches_by_hand(
    small_classification_dir: Path, control_dir: Path, tmp_path: Path
) -> None:
    config = tiny_config(
        small_classification_dir, epochs=3, control_dataset_dir=control_dir, target_precision=0.5
    )
    result = run(config, tmp_path)
    report = result.report
    assert report is not None and result.best_checkpoint is not None
    metadata = read_metadata(result.best_checkpoint)
    assert metadata.report == report

    assert report["base"]["metrics"]["val_accuracy"] == result.history[0]["val_accuracy"]
    best_epoch = int(result.best_checkpoint.name.split("-")[1])
    assert report["fine_tuned"]["epoch"] == best_epoch
    tuned = report["fine_tuned"]
    assert tuned["metrics"]["val_accuracy"] == pytest.approx(
        result.history[best_epoch]["val_accuracy"]
    )
    assert report["gain"] == pytest.approx(
        tuned["metrics"]["val_accuracy"] - report["base"]["metrics"]["val_accuracy"]
    )
    for side in (report["base"], tuned):
        confusion = side["confusion_matrix"]
        assert sum(map(sum, confusion)) == 24  # every val image, once
        diagonal = sum(confusion[index][index] for index in range(4))
        assert side["metrics"]["val_accuracy"] == pytest.approx(diagonal / 24)
        for index, name in enumerate(report["classes"]):
            row = confusion[index]
            assert side["per_class_accuracy"][name] == pytest.approx(row[index] / sum(row))

    # Calibration, fitted on val and kept with the model: a temperature, ECE before and after,
    # the reliability bins and accuracy against coverage, whose full coverage is val accuracy.
    calibration = report["calibration"]
    assert calibration["split"] == "val" and calibration["num_images"] == 24
    assert metadata.temperature == calibration["temperature"] > 0
    # The fitted temperature is never worse than none by the NLL it minimises (ECE may move
    # either way by a little on 24 images).
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-6
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1
    assert isinstance(calibration["fitted"], bool)
    for side_bins in (calibration["bins_before"], calibration["bins_after"]):
        assert len(side_bins) == 15
        assert sum(item["count"] for item in side_bins) == 24
        assert set(side_bins[0]) == {"lower", "upper", "confidence", "accuracy", "count"}
    assert calibration["coverage"][0]["coverage"] == 1.0
    assert calibration["coverage"][0]["accuracy"] == pytest.approx(tuned["metrics"]["val_accuracy"])
    assert calibration["target_precision"] == 0.5
    assert metadata.min_confidence == calibration["min_confidence"]
    assert metadata.min_confidence is not None and 0 < metadata.min_confidence <= 1
    assert isinstance(calibration["target_reached"], bool)

    clip, tokenizer, image_processor = build_tiny_clip()
    base_processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    registered = CLIPModel.from_pretrained(result.best_checkpoint)
    registered_processor = CLIPProcessor.from_pretrained(result.best_checkpoint)
    before = zero_shot_by_hand(clip, base_processor, control_dir)
    after = zero_shot_by_hand(registered, registered_processor, control_dir)
    retention = report["retention"]
    assert retention["zero_shot_accuracy_before"] == pytest.approx(before)
    assert retention["zero_shot_accuracy_after"] == pytest.approx(after)
    assert retention["change"] == pytest.approx(after - before)


def test_wise_ft_scores_each_mix_and_registers_the_best_by_val(
    small_classification_dir: Path, control_dir: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    config = tiny_config(
        small_classification_dir,
        epochs=2,
        wise_ft_alphas=[0.5, 0.0],
        control_dataset_dir=control_dir,
    )
    result = run(config, tmp_path, recorder)
    report = result.report
    assert report is not None and result.best_checkpoint is not None
    curve = {point["alpha"]: point for point in report["wise_ft"]}
    assert list(curve) == [0.0, 0.5, 1.0]
    # alpha 0 is the base model, alpha 1 the best fine-tuned epoch.
    assert curve[0.0]["val_accuracy"] == pytest.approx(report["base"]["metrics"]["val_accuracy"])
    retention = report["retention"]
    assert curve[0.0]["control_zero_shot_accuracy"] == pytest.approx(
        retention["zero_shot_accuracy_before"]
    )
    best_epoch = max(result.history[1:], key=lambda entry: entry["val_accuracy"])
    assert curve[1.0]["val_accuracy"] == pytest.approx(best_epoch["val_accuracy"])

    winner = max(curve.values(), key=lambda point: (point["val_accuracy"], point["alpha"]))
    assert [notice.type for notice in recorder.notices] == ["wise_ft"]
    assert recorder.notices[0].data["alpha"] == winner["alpha"]
    assert report["fine_tuned"]["metrics"]["val_accuracy"] == pytest.approx(winner["val_accuracy"])
    assert retention["zero_shot_accuracy_after"] == pytest.approx(
        winner["control_zero_shot_accuracy"]
    )
    if winner["alpha"] == 1.0:
        assert result.best_checkpoint.name == f"epoch-{best_epoch['epoch']}"
        assert report["fine_tuned"]["wise_ft_alpha"] is None
    else:
        assert result.best_checkpoint.name == WISE_FT_DIR_NAME
        assert read_metadata(result.best_checkpoint).wise_ft_alpha == winner["alpha"]
        assert report["fine_tuned"]["wise_ft_alpha"] == winner["alpha"]
