"""A worker's sign of life: a file in its own container, and a key in the broker.

The worker writes both from its consumer loop (worker/liveness.py); `clipft health` reads the
file, `/health` the key. Neither needs the worker to answer a request.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for the hints: the container's health check imports this module and stays on the
    # standard library (app/health/probe.py).
    import redis

# Missed beats before a worker counts as gone.
MISSED_BEATS = 3
# How often a worker beats, and the file it touches, unless settings say otherwise.
DEFAULT_BEAT_SECONDS = 10.0
DEFAULT_LIVENESS_FILE = Path(tempfile.gettempdir()) / "clipft-worker.alive"


def seen_key(queue: str) -> str:
    """The broker key a worker of `queue` refreshes; it expires when no worker does."""
    return f"clipft:worker-seen:{queue}"


def mark_seen(client: redis.Redis, *, queue: str, worker: str, beat_seconds: float) -> None:
    client.set(seen_key(queue), worker, ex=max(1, round(beat_seconds * MISSED_BEATS)))


def worker_seen(client: redis.Redis, *, queue: str) -> bool:
    return bool(client.exists(seen_key(queue)))


def file_age_seconds(path: Path) -> float | None:
    """Seconds since the file was last touched, or None if there is no such file."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
