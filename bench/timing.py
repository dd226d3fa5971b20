"""Side-by-side timing: variants run interleaved in one process, so machine noise hits both."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_best(variants: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Run each variant once per round, alternating; the median seconds of each."""
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            started = time.perf_counter()
            variant()
            timings[name].append(time.perf_counter() - started)
    return {name: statistics.median(samples) for name, samples in timings.items()}
