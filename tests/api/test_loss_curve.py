"""The training-loss curve stays bounded and ordered however long a run is."""

from __future__ import annotations

import itertools
import math
from typing import Any

from app.jobs.loss_curve import with_point


def steps_of(curve: dict[str, Any]) -> list[int]:
    return [point[0] for point in curve["points"]]


def test_points_are_added_in_step_order() -> None:
    curve = None
    for step in (1, 2, 3):
        curve = with_point(curve, step, 1.0 / step)
    assert curve == {"stride": 1, "points": [[1, 1.0], [2, 0.5], [3, round(1 / 3, 6)]]}


def test_a_resumed_attempt_replaces_the_points_past_its_checkpoint() -> None:
    curve = {"stride": 1, "points": [[10, 1.0], [20, 0.9], [30, 0.8]]}
    assert with_point(curve, 20, 0.85)["points"] == [[10, 1.0], [20, 0.85]]


def test_a_long_run_is_thinned_evenly_and_keeps_its_first_and_newest_points() -> None:
    curve = None
    for step in range(1, 10_001):
        curve = with_point(curve, step, 1.0, max_points=100)
        assert len(curve["points"]) <= 100
    assert curve is not None
    steps = steps_of(curve)
    assert len(steps) > 50
    assert steps[-1] == 10_000
    assert steps[0] < 10_000 / 50  # the start of the run is still sketched
    # Even spacing, but for the newest point: its bucket is still filling.
    gaps = {b - a for a, b in itertools.pairwise(steps[:-1])}
    assert max(gaps) <= 2 * min(gaps), gaps


def test_uneven_progress_writes_are_thinned_too() -> None:
    curve = None
    step = 0
    for index in range(3000):
        step += 1 + index % 7
        curve = with_point(curve, step, 1.0, max_points=50)
    assert curve is not None
    assert 25 <= len(curve["points"]) <= 50
    assert steps_of(curve) == sorted(steps_of(curve))
    assert steps_of(curve)[-1] == step


def test_a_non_finite_loss_is_not_stored() -> None:
    curve = {"stride": 1, "points": [[1, 0.5]]}
    assert with_point(curve, 2, math.nan) == curve
    assert with_point(curve, 2, math.inf) == curve
