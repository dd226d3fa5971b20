"""Temperature scaling, ECE, reliability bins and the abstain threshold, on planted logits."""

from __future__ import annotations

import math

import pytest
import torch

from worker.training.calibration import (
    UNREACHABLE_THRESHOLD,
    calibrate,
    confidences,
    coverage_table,
    expected_calibration_error,
    reliability_bins,
    threshold_for_precision,
)


def calibrated_sample(
    count: int, generator: torch.Generator, classes: int = 5, spread: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels drawn from softmax(logits): a perfectly calibrated model, by design."""
    logits = torch.randn(count, classes, generator=generator) * spread
    labels = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).flatten()
    return logits, labels


def test_the_ece_of_a_hand_computed_case() -> None:
    confidence = torch.tensor([0.1, 0.3, 0.5, 0.5, 0.9, 0.9, 0.97, 0.97])
    correct = torch.tensor([False, True, True, False, True, True, True, False])
    # Bins of width 1/15: |0 - 0.1|·1 + |1 - 0.3|·1 + |0.5 - 0.5|·2 + |1 - 0.9|·2
    # + |0.5 - 0.97|·2, over 8 images.
    expected = (0.1 + 0.7 + 0.0 + 0.2 + 0.94) / 8

    assert expected_calibration_error(confidence, correct) == pytest.approx(expected, abs=1e-6)

    bins = reliability_bins(confidence, correct)
    assert len(bins) == 15
    assert [item["count"] for item in bins] == [0, 1, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 0, 2, 1 + 1]
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None
    assert bins[1]["accuracy"] == 0.0 and bins[1]["confidence"] == pytest.approx(0.1)
    assert bins[13]["accuracy"] == 1.0 and bins[13]["confidence"] == pytest.approx(0.9)
    assert bins[14]["accuracy"] == 0.5 and bins[14]["confidence"] == pytest.approx(0.97)


def test_a_fitted_temperature_undoes_planted_overconfidence() -> None:
    generator = torch.Generator().manual_seed(0)
    logits, labels = calibrated_sample(2000, generator)
    # The correct logits, every one scaled up three times: sure of itself beyond its accuracy.
    overconfident = logits * 3.0

    calibration = calibrate(overconfident, labels)
    report = calibration.report

    assert calibration.temperature > 1.0
    assert calibration.temperature == pytest.approx(3.0, rel=0.15)
    assert report["ece_before"] > 0.15
    assert report["ece_after"] < report["ece_before"] / 4
    assert report["nll_after"] < report["nll_before"]
    # Dividing by a temperature never changes the argmax: accuracy at full coverage is the same.
    plain_accuracy = (overconfident.argmax(dim=1) == labels).float().mean().item()
    assert report["coverage"][0]["coverage"] == 1.0
    assert report["coverage"][0]["accuracy"] == pytest.approx(plain_accuracy)
    for side in ("bins_before", "bins_after"):
        assert sum(item["count"] for item in report[side]) == 2000
    assert report["split"] == "val" and report["num_images"] == 2000
    assert report["fitted"] is True and report["note"] is None
    assert calibration.min_confidence is None and report["target_reached"] is None


def test_an_underconfident_model_gets_a_temperature_below_one() -> None:
    generator = torch.Generator().manual_seed(1)
    logits, labels = calibrated_sample(2000, generator)

    assert calibrate(logits / 2.0, labels).temperature == pytest.approx(0.5, rel=0.15)


def test_the_threshold_for_a_target_precision_holds_on_held_out_data() -> None:
    generator = torch.Generator().manual_seed(2)
    val_logits, val_labels = calibrated_sample(4000, generator)
    test_logits, test_labels = calibrated_sample(4000, generator)
    target = 0.9

    calibration = calibrate(val_logits * 2.0, val_labels, target_precision=target)
    threshold = calibration.min_confidence
    assert threshold is not None and calibration.report["target_reached"] is True
    assert calibration.report["min_confidence"] == threshold

    val_confidence, val_correct = confidences(val_logits * 2.0, val_labels, calibration.temperature)
    kept = val_confidence >= threshold
    assert val_correct[kept].double().mean().item() >= target
    # It is the lowest such threshold: one image lower misses the target.
    below = val_confidence[val_confidence < threshold].max()
    assert val_correct[val_confidence >= below].double().mean().item() < target

    confidence, correct = confidences(test_logits * 2.0, test_labels, calibration.temperature)
    kept = confidence >= threshold
    count = int(kept.sum())
    assert 0.05 * 4000 < count < 4000
    precision = correct[kept].float().mean().item()
    standard_error = math.sqrt(target * (1 - target) / count)
    assert precision >= target - 3 * standard_error


def test_an_unreachable_target_abstains_on_everything() -> None:
    logits = torch.tensor([[2.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 1, 1])  # every prediction wrong

    assert threshold_for_precision(*confidences(logits, labels), 0.5) is None
    calibration = calibrate(logits, labels, target_precision=0.5)
    assert calibration.min_confidence == UNREACHABLE_THRESHOLD
    assert calibration.report["target_reached"] is False


def test_ties_are_kept_or_dropped_together() -> None:
    confidence = torch.tensor([0.9, 0.8, 0.8, 0.6])
    correct = torch.tensor([True, True, False, True])

    # A threshold of 0.8 keeps both 0.8s (2 of 3 right), never just the right one: for 0.8,
    # 0.9 alone reaches it (0.6 keeps 3 of 4 right).
    assert threshold_for_precision(confidence, correct, 0.8) == pytest.approx(0.9)
    assert threshold_for_precision(confidence, correct, 0.75) == pytest.approx(0.6)

    rows = coverage_table(confidence, correct)
    assert [row["count"] for row in rows] == [4, 3, 1]
    assert rows[1] == {
        "min_confidence": pytest.approx(0.8),
        "coverage": 0.75,
        "accuracy": pytest.approx(2 / 3),
        "count": 3,
    }


def test_a_split_without_mistakes_keeps_the_temperature_at_one() -> None:
    # Every answer right: the NLL keeps falling as T goes to 0, which would claim certainty
    # from a handful of images.
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.5]])
    labels = torch.tensor([0, 1, 0])

    calibration = calibrate(logits, labels, target_precision=0.9)

    assert calibration.temperature == 1.0
    assert (
        calibration.report["fitted"] is False
        and "nothing to calibrate" in calibration.report["note"]
    )
    assert calibration.report["ece_after"] == calibration.report["ece_before"]
    # Every image kept: the lowest confidence reaches the target.
    expected = confidences(logits, labels)[0].min().item()
    assert calibration.min_confidence == pytest.approx(expected)
