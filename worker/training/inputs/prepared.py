"""Prepared images: every image of a dataset decoded and resized once per input resolution.

The training loop must never wait on Python per image. So before the first epoch each image is
decoded, its short side resized to 8/7 of the model's input size and its centre square cut out,
and the result stored as one uint8 array `(images, 3, side, side)` in the dataset's folder.
Batches are then one gather from a memory-mapped file; crops, flips and normalisation run on
whole batches on the training device (`worker.training.inputs.augment`).

The file is keyed by a fingerprint of the dataset's files and the side, written atomically, and
reused by every later job on the same dataset and resolution. Large datasets are decoded by
several worker processes, small ones by two threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

logger = logging.getLogger(__name__)

PREPARED_FOLDER = "prepared"
# Bumped whenever the stored pixels would change for the same inputs (resampling, layout).
FORMAT_VERSION = 1
# A decode process costs about 0.2 s to start: give each at least this many images.
MIN_IMAGES_PER_PROCESS = 256
CHUNK_IMAGES = 64


class PreparedImageError(OSError):
    """A stored dataset image could not be read; the message names it."""


def prepared_side(input_size: int) -> int:
    """The stored square's side: 8/7 of the input, so random crops have margin (224 -> 256)."""
    return round(input_size * 8 / 7)


def resize_to_square(image: Image.Image, side: int) -> np.ndarray:
    """Resize the short side to `side` (bicubic, as CLIP's processor does), keep the centre."""
    image = image.convert("RGB")
    width, height = image.size
    scale = side / min(width, height)
    new_size = (max(side, round(width * scale)), max(side, round(height * scale)))
    # reducing_gap: shrink large images by integer steps first, then resample (much faster).
    resized = image.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left = (new_size[0] - side) // 2
    top = (new_size[1] - side) // 2
    square = resized.crop((left, top, left + side, top + side))
    return np.ascontiguousarray(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))


def fingerprint(dataset_dir: Path, files: Sequence[str], side: int) -> str:
    """Changes whenever any image file (name, size, modification time) or the side changes."""
    digest = hashlib.sha256(f"v{FORMAT_VERSION}:{side}:".encode())
    for name in files:
        stat = (dataset_dir / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def prepared_path(dataset_dir: Path, side: int, key: str) -> Path:
    return dataset_dir / PREPARED_FOLDER / f"{side}px-{key}.npy"


def load_prepared(
    dataset_dir: Path, files: Sequence[str], input_size: int, *, workers: int
) -> np.ndarray:
    """The dataset's prepared array (memory-mapped, read-only), built first if missing or stale."""
    side = prepared_side(input_size)
    path = prepared_path(dataset_dir, side, fingerprint(dataset_dir, files, side))
    if not path.is_file():
        build_prepared(dataset_dir, files, side, path, workers=workers)
    array = np.load(path, mmap_mode="r")
    if array.shape != (len(files), 3, side, side):
        expected = (len(files), 3, side, side)
        raise ValueError(f"prepared file {path.name} has shape {array.shape}, not {expected}")
    return array


def build_prepared(
    dataset_dir: Path, files: Sequence[str], side: int, path: Path, *, workers: int
) -> None:
    """Write the array into a temporary file, then rename: readers never see a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        open_memmap(staging, mode="w+", dtype=np.uint8, shape=(len(files), 3, side, side)).flush()
        workers = max(1, min(workers, len(files) // MIN_IMAGES_PER_PROCESS))
        if workers > 1:
            _fill_with_processes(dataset_dir, files, side, staging, workers)
        else:
            _fill_with_threads(dataset_dir, files, side, staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _remove_stale(path)
    logger.info("prepared %d images at %d px in %s", len(files), side, path.name)


def _fill_with_threads(dataset_dir: Path, files: Sequence[str], side: int, staging: Path) -> None:
    """Pillow releases the GIL while it decodes and resizes: two threads keep two cores busy."""
    starts = range(0, len(files), CHUNK_IMAGES)
    with ThreadPoolExecutor(2, thread_name_prefix="prepare") as pool:
        for _ in pool.map(
            lambda start: fill_rows(
                dataset_dir, staging, start, list(files[start : start + CHUNK_IMAGES]), side
            ),
            starts,
        ):
            pass


def _fill_with_processes(
    dataset_dir: Path, files: Sequence[str], side: int, staging: Path, workers: int
) -> None:
    """One plain process per contiguous share of the rows.

    Plain `python -m worker.training.inputs.prepared` processes rather than a multiprocessing pool:
    they import only NumPy and Pillow (a spawned pool child re-imports the parent's main
    module, torch and all), and a daemonic parent (Celery's pool) may start them too.
    """
    share = -(-len(files) // workers)
    processes = []
    for start in range(0, len(files), share):
        task = {
            "dataset_dir": str(dataset_dir),
            "staging": str(staging),
            "start": start,
            "files": list(files[start : start + share]),
            "side": side,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.training.inputs.prepared"],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Hand every process its task before waiting on any: they must decode side by side.
        assert process.stdin is not None
        process.stdin.write(json.dumps(task).encode())
        process.stdin.close()
        processes.append(process)
    errors = []
    for process in processes:
        assert process.stderr is not None
        stderr = process.stderr.read()
        if process.wait() != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            errors.append(lines[-1] if lines else f"exit code {process.returncode}")
    if errors:
        raise PreparedImageError(errors[0].removeprefix(f"{PreparedImageError.__name__}: "))


def fill_rows(dataset_dir: Path, staging: Path, start: int, names: list[str], side: int) -> None:
    """Decode consecutive images into their rows of the staging file, from `start` on."""
    array = np.load(staging, mmap_mode="r+")
    for offset, name in enumerate(names):
        try:
            with Image.open(dataset_dir / name) as image:
                array[start + offset] = resize_to_square(image, side)
        except OSError as error:
            # The dataset's images were checked at upload: this is damage on disk since then.
            raise PreparedImageError(f"cannot read dataset image {name}: {error}") from None
    array.flush()


def _remove_stale(current: Path) -> None:
    """Drop prepared arrays of the same side made from an older state of the dataset's files."""
    side_prefix = current.name.split("-", 1)[0]
    for other in current.parent.glob(f"{side_prefix}-*.npy"):
        if other != current:
            other.unlink(missing_ok=True)


def main() -> None:
    """Fill one share of a staging file; the task arrives as JSON on stdin (see above)."""
    task = json.loads(sys.stdin.buffer.read())
    try:
        fill_rows(
            Path(task["dataset_dir"]),
            Path(task["staging"]),
            task["start"],
            task["files"],
            task["side"],
        )
    except PreparedImageError as error:
        sys.exit(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    main()
