"""Batches of (pixels, targets) read from a dataset manifest, decoded by a pool of threads.

Threads rather than DataLoader worker processes: the Celery pool runs each job in a daemonic
child process, which may not start processes of its own, and Pillow's decoding and torchvision's
resizing release the GIL, so threads keep a GPU fed as well.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from app.ml.manifest import ManifestItem
from app.ml.preprocess import ImageTransform


@dataclass
class Batch:
    pixel_values: torch.Tensor
    items: list[ManifestItem]


def load_pixels(dataset_dir: Path, item: ManifestItem, transform: ImageTransform) -> torch.Tensor:
    with Image.open(dataset_dir / item.file) as image:
        return transform(image.convert("RGB"))


class BatchLoader:
    """Yields batches in a seeded order per epoch, preparing the next batch while one trains."""

    def __init__(
        self,
        *,
        dataset_dir: Path,
        items: list[ManifestItem],
        transform: ImageTransform,
        batch_size: int,
        shuffle: bool,
        seed: int,
        threads: int,
    ) -> None:
        self.dataset_dir = dataset_dir
        self.items = items
        self.transform = transform
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.threads = max(1, threads)

    def __len__(self) -> int:
        return (len(self.items) + self.batch_size - 1) // self.batch_size

    def _order(self, epoch: int) -> list[ManifestItem]:
        order = list(self.items)
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def batches(self, epoch: int = 0) -> Iterator[Batch]:
        """Each thread prepares a whole batch; up to `threads` batches are in flight at once."""
        order = self._order(epoch)
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="batch-loader")
        in_flight: deque[Future[Batch]] = deque()
        try:
            for chunk in chunks:
                in_flight.append(pool.submit(self._load_batch, chunk))
                if len(in_flight) > self.threads:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            # A cancelled run stops iterating early: drop the batches nobody will read.
            pool.shutdown(wait=True, cancel_futures=True)

    def _load_batch(self, chunk: list[ManifestItem]) -> Batch:
        pixels = [load_pixels(self.dataset_dir, item, self.transform) for item in chunk]
        return Batch(pixel_values=torch.stack(pixels), items=chunk)
