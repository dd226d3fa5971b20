"""A job's training-loss curve: (step, loss) points, kept to a bounded size for any run length.

Steps are grouped into buckets of `stride` steps and each bucket keeps its newest point. When
there are more than `MAX_POINTS` buckets the stride doubles, so a long run keeps an even sketch
of its whole history, and the newest loss is always the last point.
"""

from __future__ import annotations

import math
from typing import Any

MAX_POINTS = 400


def empty_curve() -> dict[str, Any]:
    return {"stride": 1, "points": []}


def with_point(
    curve: dict[str, Any] | None, step: int, loss: float, *, max_points: int = MAX_POINTS
) -> dict[str, Any]:
    """The curve with (step, loss) added; points at or past `step` (left by an attempt that
    was resumed from an earlier checkpoint) are replaced."""
    curve = curve or empty_curve()
    if not math.isfinite(loss):
        # JSON (and PostgreSQL's json type) has no NaN or infinity; a diverged step is
        # already visible in `metrics.train_loss` and in the job's error.
        return curve
    stride = int(curve.get("stride", 1))
    points = [point for point in curve.get("points", []) if point[0] < step]
    points.append([step, round(loss, 6)])
    points = _newest_per_bucket(points, stride)
    while len(points) > max_points:
        stride *= 2
        points = _newest_per_bucket(points, stride)
    return {"stride": stride, "points": points}


def _newest_per_bucket(points: list[list[float]], stride: int) -> list[list[float]]:
    kept: list[list[float]] = []
    for point in points:
        if kept and kept[-1][0] // stride == point[0] // stride:
            kept[-1] = point
        else:
            kept.append(point)
    return kept
