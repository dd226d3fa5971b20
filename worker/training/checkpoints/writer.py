"""Checkpoints written on a background thread while the next epoch trains.

Writing a ViT-B/32 checkpoint (weights and AdamW state, 1.8 GB) takes seconds, about as long as
an epoch of a few thousand images on a GPU. The run takes a host copy between epochs (a fraction
of a second) and hands it to this writer. One write is in flight at a time, so host memory holds
at most one snapshot; what follows a write (pruning, telling the supervisor) runs on the run's
own thread, when the run next looks: at a progress point, the next checkpoint or the end.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from worker.training.checkpoints.folder import CheckpointSnapshot


class CheckpointWriter:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: tuple[Future[Path], Callable[[], None]] | None = None

    def submit(self, snapshot: CheckpointSnapshot, folder: Path, then: Callable[[], None]) -> None:
        """Write `snapshot` to `folder` in the background; `then` runs once it is on disk."""
        self.finish()
        self._pending = (self._pool.submit(snapshot.write, folder), then)

    def poll(self) -> None:
        """Complete a write that has finished; never waits."""
        if self._pending is not None and self._pending[0].done():
            self.finish()

    def finish(self) -> None:
        """Wait for the write in flight; a failed write raises here, on the run's thread."""
        if self._pending is None:
            return
        future, then = self._pending
        self._pending = None
        future.result()
        then()

    def close(self) -> None:
        """Let a write in flight reach the disk (a good checkpoint), without its follow-up."""
        self._pool.shutdown(wait=True)
