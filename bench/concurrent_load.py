"""Run numbered requests from N client threads and summarise throughput and latency."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    images: int
    seconds: float
    latencies: list[float]  # seconds, one per request

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    def latency_ms(self, percentile: float) -> float:
        """Nearest-rank percentile: with few requests, p99 is simply the slowest."""
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(percentile / 100 * len(ordered)))
        return 1000 * ordered[rank - 1]


def run_load(
    send: Callable[[int], None], *, requests: int, clients: int, images_per_request: int
) -> LoadResult:
    """Each client thread takes the next request number and sends it, until none are left."""
    next_request = iter(range(requests))
    take_lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with take_lock:
                index = next(next_request, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                send(index)
            except BaseException as error:
                errors.append(error)
                return
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, the first with: {errors[0]!r}")
    return LoadResult(images=requests * images_per_request, seconds=seconds, latencies=latencies)
