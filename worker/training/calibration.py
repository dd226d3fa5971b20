"""Confidence that means what it says: temperature scaling and an abstain threshold, on val.

After training, one scalar temperature `T` is fitted on the val split's logits (the logits as
served: class prompts times the logit scale, or the trained head), minimising the negative
log-likelihood of `softmax(logits / T)` (Guo et al. 2017). Dividing by `T > 0` never changes the
argmax, so accuracy stays what it was; only the probabilities move. The expected calibration
error (15 equal-width bins) is measured before and after, on the same split.

With a `target_precision`, the default abstain threshold is the lowest calibrated confidence
whose val precision (accuracy among the images kept, those at or above it) reaches the target.

All of it runs on whole tensors on the host, once per run: no per-image host syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15
# How far the fitted temperature may go: a tiny val split that the model gets all right would
# otherwise drive it towards 0 (infinitely sharp), one it gets all wrong towards infinity.
TEMPERATURE_BOUNDS = (0.05, 20.0)
# The coverages the report's accuracy-against-coverage table asks about.
COVERAGES = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
# When no threshold reaches the target precision on val, the model abstains on everything but
# certainties: a model that says "unsure" rather than guessing.
UNREACHABLE_THRESHOLD = 1.0


@dataclass(frozen=True)
class Calibration:
    """What serving keeps of the calibration (in the model's `clipft.json`), and the report."""

    temperature: float
    # The default abstain threshold chosen for the job's target precision; None without one.
    min_confidence: float | None
    report: dict[str, Any]


def _host(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # A clone: evaluation's tensors are inference tensors, which autograd may not save.
    return logits.detach().float().cpu().clone(), targets.detach().long().cpu().clone()


def negative_log_likelihood(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> float:
    return float(F.cross_entropy(logits / temperature, targets))


def has_mistakes(logits: torch.Tensor, targets: torch.Tensor) -> bool:
    """Whether any top-1 answer is wrong. Without a mistake the NLL falls for ever as T goes to
    0: the split gives no evidence of how often the model errs, and sharpening it to certainty
    (what a small val split the model gets all right would do) is not calibration."""
    return bool((logits.argmax(dim=-1) != targets).any())


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, *, max_iter: int = 100) -> float:
    """The temperature that minimises the NLL of `softmax(logits / T)`: LBFGS on log T; 1 when
    the split has no mistake to calibrate against."""
    logits, targets = _host(logits, targets)
    if not has_mistakes(logits, targets):
        return 1.0
    log_temperature = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_temperature], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_temperature.exp(), targets)
        loss.backward()
        return loss

    with torch.inference_mode(False), torch.enable_grad():
        optimizer.step(closure)
    fitted = float(log_temperature.detach().exp())
    low, high = TEMPERATURE_BOUNDS
    if not math.isfinite(fitted):
        return 1.0
    fitted = min(max(fitted, low), high)
    # LBFGS starts at T = 1: whatever it found must be no worse than where it began.
    if negative_log_likelihood(logits, targets, fitted) > negative_log_likelihood(
        logits, targets, 1.0
    ):
        return 1.0
    return fitted


def confidences(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's top probability after dividing by `temperature`, and whether it is right."""
    probabilities = (logits.float() / temperature).softmax(dim=-1)
    top, predicted = probabilities.max(dim=-1)
    return top, predicted == targets


def _binned(
    confidence: torch.Tensor, correct: torch.Tensor, num_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bin edges, and per bin the count, the sum of confidences and the number right."""
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float64)
    # Bins are (lower, upper]; the first also holds a confidence of exactly 0.
    index = torch.bucketize(confidence.double(), edges[1:-1])
    counts = torch.bincount(index, minlength=num_bins)
    confidence_sums = torch.bincount(index, weights=confidence.double(), minlength=num_bins)
    correct_sums = torch.bincount(index, weights=correct.double(), minlength=num_bins)
    return edges, counts, confidence_sums, correct_sums


def reliability_bins(
    confidence: torch.Tensor, correct: torch.Tensor, num_bins: int = ECE_BINS
) -> list[dict[str, float | int | None]]:
    """Equal-width bins `(lower, upper]` of confidence: per bin the mean confidence, the
    accuracy and the count (confidence and accuracy None when the bin is empty)."""
    edges, counts, confidence_sums, correct_sums = _binned(confidence, correct, num_bins)
    return [
        {
            "lower": lower,
            "upper": upper,
            "confidence": confidence_sum / count if count else None,
            "accuracy": correct_sum / count if count else None,
            "count": count,
        }
        for lower, upper, count, confidence_sum, correct_sum in zip(
            edges[:-1].tolist(),
            edges[1:].tolist(),
            counts.tolist(),
            confidence_sums.tolist(),
            correct_sums.tolist(),
            strict=True,
        )
    ]


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, num_bins: int = ECE_BINS
) -> float:
    """Sum over the bins of |accuracy - mean confidence| weighted by the bin's share of images:
    per bin, |number right - sum of confidences|, over all the images."""
    if not len(confidence):
        return 0.0
    _, _, confidence_sums, correct_sums = _binned(confidence, correct, num_bins)
    return float((correct_sums - confidence_sums).abs().sum() / len(confidence))


def _ranked(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidences best first, and the precision of keeping each prefix (float64)."""
    order = confidence.argsort(descending=True, stable=True)
    ranked = confidence[order].double()
    kept_right = correct[order].double().cumsum(0)
    precision = kept_right / torch.arange(1, len(ranked) + 1, dtype=torch.float64)
    return ranked, precision


def threshold_for_precision(
    confidence: torch.Tensor, correct: torch.Tensor, target: float
) -> float | None:
    """The lowest confidence `t` such that the images with confidence >= t are right at least
    `target` of the time; None when no threshold reaches it."""
    if not len(confidence):
        return None
    ranked, precision = _ranked(confidence, correct)
    # A threshold keeps every image that ties with it: only the ends of runs of ties count.
    run_ends = torch.ones(len(ranked), dtype=torch.bool)
    run_ends[:-1] = ranked[:-1] != ranked[1:]
    reaching = torch.nonzero(run_ends & (precision >= target - 1e-12)).flatten()
    if not len(reaching):
        return None
    return float(ranked[reaching[-1]])


def coverage_table(confidence: torch.Tensor, correct: torch.Tensor) -> list[dict[str, Any]]:
    """Accuracy against coverage: for each coverage asked, the threshold that keeps about that
    share of the images (the most confident ones), the share it keeps and their accuracy."""
    total = len(confidence)
    if not total:
        return []
    ranked, _ = _ranked(confidence, correct)
    thresholds = sorted(
        {float(ranked[max(1, math.ceil(share * total)) - 1]) for share in COVERAGES}, reverse=True
    )
    kept = confidence.double()[None, :] >= torch.tensor(thresholds, dtype=torch.float64)[:, None]
    counts = kept.sum(dim=1)
    right = (kept & correct[None, :]).sum(dim=1)
    rows = []
    for threshold, count, hits in zip(thresholds, counts.tolist(), right.tolist(), strict=True):
        rows.append(
            {
                "min_confidence": threshold,
                "coverage": count / total,
                "accuracy": hits / count if count else None,
                "count": count,
            }
        )
    return sorted(rows, key=lambda row: -row["coverage"])


def calibrate(
    logits: torch.Tensor, targets: torch.Tensor, *, target_precision: float | None = None
) -> Calibration:
    """Fit the temperature on val, choose the default threshold, and say what changed."""
    logits, targets = _host(logits, targets)
    temperature = fit_temperature(logits, targets)
    before, correct = confidences(logits, targets)
    after, _ = confidences(logits, targets, temperature)
    min_confidence: float | None = None
    reached: bool | None = None
    if target_precision is not None:
        threshold = threshold_for_precision(after, correct, target_precision)
        reached = threshold is not None
        min_confidence = threshold if threshold is not None else UNREACHABLE_THRESHOLD
    fitted = has_mistakes(logits, targets)
    report = {
        "split": "val",
        "method": "temperature scaling, fitted on the val split",
        "num_images": len(targets),
        "temperature": temperature,
        "fitted": fitted,
        "note": None
        if fitted
        else "every val image is right: nothing to calibrate against, the temperature stays 1",
        "ece_before": expected_calibration_error(before, correct),
        "ece_after": expected_calibration_error(after, correct),
        "nll_before": negative_log_likelihood(logits, targets, 1.0),
        "nll_after": negative_log_likelihood(logits, targets, temperature),
        "num_bins": ECE_BINS,
        "bins_before": reliability_bins(before, correct),
        "bins_after": reliability_bins(after, correct),
        "coverage": coverage_table(after, correct),
        "target_precision": target_precision,
        "min_confidence": min_confidence,
        "target_reached": reached,
    }
    return Calibration(temperature=temperature, min_confidence=min_confidence, report=report)
