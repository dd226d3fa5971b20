"""How much the thread pool speeds up storing an upload's photos (decode, shrink, save PNG).

Rerun: .venv/bin/python -m bench.ingest_threads
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from app.datasets.archive import ArchiveLimits, open_archive
from app.datasets.image_store import store_images
from app.ml.images import ImageLimits
from bench.timing import interleaved_best

PHOTOS = 32
LIMITS = ArchiveLimits(
    max_entries=10_000,
    max_uncompressed_bytes=2**34,
    max_compression_ratio=1000.0,
    max_entry_bytes=2**28,
)


def photo_jpeg(rng: np.random.Generator) -> bytes:
    """A 1600x1200 JPEG with smooth gradients and grain, like a camera photo."""
    y, x = np.mgrid[0:1200, 0:1600]
    base = np.stack([x / 1600 * 255, y / 1200 * 255, (x + y) / 2800 * 255], axis=-1)
    grain = rng.normal(0, 12, size=base.shape)
    pixels = np.clip(base + grain, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        archive_path = root / "photos.zip"
        with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_STORED) as archive:
            for index in range(PHOTOS):
                archive.writestr(f"parts/{index:03d}.jpg", photo_jpeg(rng))

        def store(threads: int) -> None:
            target = root / f"out-{threads}"
            shutil.rmtree(target, ignore_errors=True)
            with open_archive(archive_path, archive_name="photos.zip", limits=LIMITS) as archive:
                store_images(
                    archive,
                    [entry for entry in archive.entries if not entry.is_dir],
                    dataset_dir=target,
                    limits=ImageLimits(max_pixels=50_000_000),
                    max_side=512,
                    threads=threads,
                )

        counts = (1, 2, 4)
        seconds = interleaved_best({str(n): functools.partial(store, n) for n in counts}, rounds=3)
    print(f"store {PHOTOS} JPEG photos of 1600x1200 as 512 px PNGs, {os.cpu_count()} CPUs")
    for threads in counts:
        value = seconds[str(threads)]
        print(
            f"  {threads} thread(s): {PHOTOS / value:6.1f} photos/s"
            f"  ({seconds['1'] / value:.2f}x of 1 thread)"
        )
    print("rerun: .venv/bin/python -m bench.ingest_threads")


if __name__ == "__main__":
    main()
