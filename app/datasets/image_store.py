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

from app.core.errors import UnusableFiles
from app.datasets.archive import ArchiveEntry, SafeArchive
from app.ml.images import ImageDecodeError, ImageLimits, decode_image

IMAGES_FOLDER = "images"


# A refusal lists at most this many bad files; the count says how many there were in all.
MAX_LISTED_FAILURES = 200


def store_image(
    payload: bytes, *, name: str, target: Path, limits: ImageLimits, max_side: int
) -> None:
    """Decode one image with the limits, shrink it to `max_side`, save it as an RGB PNG.

    Raises ImageDecodeError for an image that cannot be used.
    """
    image = decode_image(payload, limits)
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
    """Store each entry as `images/<n>.png`.

    Every image is tried, so that a refused upload names all of its bad files at once (in
    archive order) rather than one per attempt.
    """
    (dataset_dir / IMAGES_FOLDER).mkdir(parents=True, exist_ok=True)
    files = [f"{IMAGES_FOLDER}/{number}.png" for number in range(len(entries))]
    failures: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="ingest") as pool:
        in_flight: deque[tuple[str, Future[None]]] = deque()
        try:
            for entry, relative in zip(entries, files, strict=True):
                # A broken archive entry is the archive's fault, not one image's: it stops here.
                payload = archive.read(entry)
                future = pool.submit(
                    store_image,
                    payload,
                    name=entry.name,
                    target=dataset_dir / relative,
                    limits=limits,
                    max_side=max_side,
                )
                in_flight.append((entry.name, future))
                if len(in_flight) >= 2 * threads:
                    _collect(in_flight.popleft(), failures)
            while in_flight:
                _collect(in_flight.popleft(), failures)
        finally:
            for _, pending in in_flight:
                pending.cancel()
    if failures:
        raise UnusableFiles(failures, total=len(entries), listed=MAX_LISTED_FAILURES)
    return files


def _collect(done: tuple[str, Future[None]], failures: list[tuple[str, str]]) -> None:
    name, future = done
    try:
        future.result()
    except ImageDecodeError as error:
        failures.append((name, str(error)))
