"""Decode, shrink and save a dataset's images, several at a time.

The zip is read in order on the calling thread (its entries share one file handle); decoding,
resizing and PNG encoding run in a thread pool, since Pillow releases the GIL for all three.
At most two images per thread are held in memory at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from app.core.errors import Unprocessable
from app.datasets.archive import ArchiveEntry, SafeArchive
from app.ml.images import ImageDecodeError, ImageLimits, decode_image

IMAGES_FOLDER = "images"


def store_image(
    payload: bytes, *, name: str, target: Path, limits: ImageLimits, max_side: int
) -> None:
    """Decode one image with the limits, shrink it to `max_side`, save it as an RGB PNG."""
    try:
        image = decode_image(payload, limits)
    except ImageDecodeError as error:
        raise Unprocessable(f"{name}: {error}") from None
    # thumbnail only ever shrinks, and keeps the aspect ratio.
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Light compression: these are working copies, and saving must not dominate ingestion.
    image.save(target, format="PNG", compress_level=1)


def store_images(
    archive: SafeArchive,
    entries: Sequence[ArchiveEntry],
    *,
    dataset_dir: Path,
    limits: ImageLimits,
    max_side: int,
    threads: int,
) -> list[str]:
    """Store each entry as `images/<n>.png`; the first bad image in archive order is the error."""
    (dataset_dir / IMAGES_FOLDER).mkdir(parents=True, exist_ok=True)
    files = [f"{IMAGES_FOLDER}/{number}.png" for number in range(len(entries))]
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ingest") as pool:
        in_flight: deque[Future[None]] = deque()
        try:
            for entry, relative in zip(entries, files, strict=True):
                try:
                    payload = archive.read(entry)
                except Exception:
                    _finish(in_flight)  # an earlier bad image is reported first
                    raise
                in_flight.append(
                    pool.submit(
                        store_image,
                        payload,
                        name=entry.name,
                        target=dataset_dir / relative,
                        limits=limits,
                        max_side=max_side,
                    )
                )
                if len(in_flight) >= 2 * threads:
                    in_flight.popleft().result()
            _finish(in_flight)
        finally:
            for future in in_flight:
                future.cancel()
    return files


def _finish(in_flight: deque[Future[None]]) -> None:
    """Wait for the images in flight, in order, raising the first one's error."""
    while in_flight:
        in_flight.popleft().result()
