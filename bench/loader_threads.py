"""How much the threaded batch loader speeds up feeding a full-size (224 px) CLIP.

Rerun: .venv/bin/python -m bench.loader_threads
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor

from app.ml.manifest import ManifestItem
from app.ml.preprocess import train_transform
from bench.timing import interleaved_best
from worker.training.data import BatchLoader

IMAGES = 256
BATCH_SIZE = 32


def write_images(folder: Path) -> list[ManifestItem]:
    """Stored-size (512 px) noisy PNGs, like what an upload of photos leaves on disk."""
    rng = np.random.default_rng(0)
    items = []
    for index in range(IMAGES):
        pixels = rng.integers(0, 255, size=(384, 512, 3), dtype=np.uint8)
        name = f"{index:04d}.png"
        Image.fromarray(pixels).save(folder / name, compress_level=1)
        items.append(ManifestItem(file=name, source=name, split="train", label="x"))
    return items


def main() -> None:
    random.seed(0)
    processor = CLIPImageProcessor()  # the ViT-B/32 defaults: 224 px crops
    with tempfile.TemporaryDirectory() as folder:
        items = write_images(Path(folder))

        def loader(threads: int) -> BatchLoader:
            return BatchLoader(
                dataset_dir=Path(folder),
                items=items,
                transform=train_transform(processor),
                batch_size=BATCH_SIZE,
                shuffle=True,
                seed=0,
                threads=threads,
            )

        variants = {
            f"{threads} thread{'s' if threads > 1 else ''}": (
                lambda threads=threads: sum(1 for _ in loader(threads).batches())
            )
            for threads in (1, 2, 4)
        }
        seconds = interleaved_best(variants, rounds=3)
    baseline = seconds["1 thread"]
    print(
        f"BatchLoader, {IMAGES} images 512x384 -> 224 px, batch {BATCH_SIZE}, {os.cpu_count()} CPUs"
    )
    for name, value in seconds.items():
        print(f"  {name:>9}: {IMAGES / value:7.1f} images/s  ({baseline / value:.2f}x of 1 thread)")
    print("rerun: .venv/bin/python -m bench.loader_threads")


if __name__ == "__main__":
    main()
