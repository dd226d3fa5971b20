"""A job's report: the base model against the registered one on val, and what it cost.

Per class for classification sets (accuracy and the confusion matrix), recall@1/5 both ways
for caption sets; the control set's zero-shot accuracy before and after; the WiSE-FT curve;
for classification, the calibration fitted on val (`calibration.py`): the temperature, the
expected calibration error before and after with the reliability bins, accuracy against
coverage and the default abstain threshold.
"""

from __future__ import annotations

from typing import Any

from worker.training.evaluate import PRIMARY_METRIC, EvalResult

# A confusion matrix grows with the square of the classes; past this many it is left out.
MAX_CONFUSION_CLASSES = 100


def result_summary(result: EvalResult) -> dict[str, Any]:
    summary: dict[str, Any] = {"metrics": result.metrics}
    if result.confusion is not None:
        summary["per_class_accuracy"] = {
            name: (row[index] / sum(row) if sum(row) else None)
            for index, (name, row) in enumerate(zip(result.classes, result.confusion, strict=True))
        }
        if len(result.classes) <= MAX_CONFUSION_CLASSES:
            summary["confusion_matrix"] = result.confusion
    return summary


def build_report(
    *,
    kind: str,
    method: str,
    base: dict[str, Any],
    fine_tuned: dict[str, Any],
    best_epoch: int | None,
    epochs_trained: int,
    stopped_early: str | None,
    control_before: float | None,
    control_after: float | None,
    wise_ft: list[dict[str, Any]] | None,
    wise_ft_alpha: float | None,
    classes: list[str],
    trainable_parameters: dict[str, int],
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metric = PRIMARY_METRIC[kind]
    base_value = base["metrics"].get(metric)
    tuned_value = fine_tuned["metrics"].get(metric)
    report: dict[str, Any] = {
        "kind": kind,
        "method": method,
        "primary_metric": metric,
        "classes": classes,
        "base": base,
        "fine_tuned": {**fine_tuned, "epoch": best_epoch, "wise_ft_alpha": wise_ft_alpha},
        "gain": (
            tuned_value - base_value if base_value is not None and tuned_value is not None else None
        ),
        "epochs_trained": epochs_trained,
        "trainable_parameters": trainable_parameters,
        "stopped_early": stopped_early,
        "retention": None,
        "wise_ft": wise_ft,
        "calibration": calibration,
    }
    if control_before is not None and control_after is not None:
        report["retention"] = {
            "zero_shot_accuracy_before": control_before,
            "zero_shot_accuracy_after": control_after,
            "change": control_after - control_before,
        }
    return report
