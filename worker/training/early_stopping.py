"""Early stopping: stop once the val metric has not improved for `patience` epochs."""

from __future__ import annotations

from typing import Any


def early_stop_reason(
    history: list[dict[str, Any]], metric: str, *, patience: int, min_delta: float
) -> str | None:
    """Why to stop now, in words, or None to go on (also when there is no val metric).

    The base model's evaluation (epoch 0) is the first reference: a run that never beats the
    model it started from stops as soon as one that stalls later would.
    """
    best: float | None = None
    best_epoch, since_best = 0, 0
    for entry in history:
        value = entry.get(metric)
        if value is None:
            return None
        if best is None or value > best + min_delta:
            best, best_epoch, since_best = value, entry["epoch"], 0
        else:
            since_best += 1
    if best is None or since_best < patience:
        return None
    return (
        f"stopped early after epoch {history[-1]['epoch']}: {metric} has not improved by more "
        f"than {min_delta:g} for {since_best} epochs since epoch {best_epoch} ({best:.4f})"
    )
