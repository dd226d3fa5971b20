"""Batches of prepared uint8 images on the training device, the next one gathered in advance.

A batch is one gather of rows from the memory-mapped prepared array
(`worker.training.inputs.prepared`) into a (pinned, on a GPU) buffer, done by a background
thread while the device computes, and one non-blocking copy to the device. Nothing here runs
per image.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from worker.training.distributed.sharding import share_of

_STOP = object()


@dataclass
class Batch:
    # Rows of the prepared array (dataset item indices), on the device.
    rows: torch.Tensor
    # The same rows on the host, for per-sample randomness drawn from each sample's index.
    host_rows: np.ndarray
    # uint8 `(batch, 3, side, side)` on the device.
    squares: torch.Tensor
    # Rows of the global batch this one is a rank's share of (its own size on one process).
    global_size: int = 0

    def __len__(self) -> int:
        return len(self.host_rows)


class PreparedLoader:
    """One split's rows of a prepared array, in a seeded order per epoch."""

    def __init__(
        self,
        *,
        images: np.ndarray,
        rows: list[int],
        batch_size: int,
        shuffle: bool,
        seed: int,
        device: torch.device,
        prefetch: int = 2,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = device
        self.prefetch = max(1, prefetch)
        # Data parallel: `batch_size` is the global batch; this rank trains its share of each.
        self.rank = rank
        self.world = world

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        # A last batch too small to give every rank a row is left out when there are ranks.
        return full + (1 if rest >= self.world else 0)

    @property
    def num_samples(self) -> int:
        return len(self.rows)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.rows
        return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

    def batches(self, epoch: int = 0) -> Iterator[Batch]:
        """The epoch's batches; a background thread gathers the next ones while one trains."""
        order = self.order(epoch)
        # Sorted within a batch: reads from the memory map stay sequential; the set is the same.
        chunks = [
            np.sort(order[start : start + self.batch_size])
            for start in range(0, len(order), self.batch_size)
        ][: len(self)]
        sizes = [len(chunk) for chunk in chunks]
        if self.world > 1:
            chunks = [share_of(chunk, self.rank, self.world) for chunk in chunks]
        ready: queue.Queue[object] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._gather_all, args=(chunks, ready, stop), name="batch-gather", daemon=True
        )
        producer.start()
        try:
            for global_size in [*sizes, 0]:
                item = ready.get()
                if item is _STOP:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, tuple)
                host_rows: np.ndarray = item[0]
                host_squares: torch.Tensor = item[1]
                yield Batch(
                    rows=torch.from_numpy(host_rows).to(self.device, non_blocking=True),
                    host_rows=host_rows,
                    squares=host_squares.to(self.device, non_blocking=True),
                    global_size=global_size,
                )
        finally:
            # A cancelled run stops early: let the producer see it and drop what it holds.
            stop.set()
            while producer.is_alive():
                with contextlib.suppress(queue.Empty):
                    ready.get(timeout=0.05)

    def _gather_all(
        self, chunks: list[np.ndarray], ready: queue.Queue[object], stop: threading.Event
    ) -> None:
        try:
            for rows in chunks:
                item = (rows, self._gather(rows))
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.05)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_STOP)
        except BaseException as error:  # surfaced on the consuming thread
            ready.put(error)

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        # Pinned host memory lets the copy to a GPU run without blocking; PyTorch's caching
        # host allocator reuses each buffer only once its copy has completed.
        pinned = self.device.type == "cuda"
        buffer = torch.empty(
            (len(rows), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=pinned
        )
        np.take(self.images, rows, axis=0, out=buffer.numpy())
        return buffer
