"""A real full disk for tests: a small tmpfs mounted on a folder (needs root, as in CI)."""

from __future__ import annotations

import errno
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def can_mount_a_small_filesystem() -> bool:
    probe = Path(tempfile.mkdtemp(prefix="clipft-mount-probe-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], check=True)
        return True
    except OSError:
        return False
    finally:
        probe.rmdir()


@contextmanager
def small_filesystem(folder: Path, size: str) -> Iterator[Path]:
    """`folder` (created if need be) on a tmpfs of `size` (`4m`, `512k`) while in the block."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write a file in `folder` until its filesystem has no room left."""
    block = b"\0" * 4096
    with (folder / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(block)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
