"""Learning-rate schedules: warmup for all, then cosine, linear, step or constant."""

from __future__ import annotations

import itertools

import pytest

from worker.training.schedule import LrSchedule


def multipliers(kind: str, **extra: int | float) -> list[float]:
    schedule = LrSchedule(kind=kind, total_steps=100, warmup_steps=10, **extra)  # type: ignore[arg-type]
    return [schedule.multiplier(step) for step in range(100)]


@pytest.mark.parametrize("kind", ["cosine", "linear", "step", "constant"])
def test_every_schedule_warms_up_linearly(kind: str) -> None:
    values = multipliers(kind, steps_per_epoch=10, step_size_epochs=3, gamma=0.5)
    assert values[0] == pytest.approx(0.1)
    assert values[4] == pytest.approx(0.5)
    assert values[9] == pytest.approx(1.0)


def test_cosine_decays_smoothly_to_zero() -> None:
    values = multipliers("cosine")
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5, abs=0.01)
    assert values[99] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))


def test_linear_decays_in_equal_steps() -> None:
    values = multipliers("linear")
    assert values[10] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5)
    differences = {round(a - b, 9) for a, b in itertools.pairwise(values[10:])}
    assert differences == {round(1 / 90, 9)}


def test_step_drops_by_gamma_every_step_size_epochs() -> None:
    values = multipliers("step", steps_per_epoch=10, step_size_epochs=3, gamma=0.5)
    assert values[10] == values[29] == 1.0
    assert values[30] == values[59] == 0.5
    assert values[60] == 0.25 and values[99] == 0.125


def test_constant_holds_the_peak_after_warmup() -> None:
    assert set(multipliers("constant")[10:]) == {1.0}
