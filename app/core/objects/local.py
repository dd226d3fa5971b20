"""The local backend: objects are files under one root folder (today's single machine)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from app.core.objects.store import (
    STAGING_SEGMENT,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    copy_hashing,
    sha256_of_file,
    validate_key,
    validate_prefix,
)


class LocalObjectStore:
    """Objects as files under `root`; a write goes to `root/.staging/` and is renamed into place,
    so a reader finds a whole file or none."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def location(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    @contextlib.contextmanager
    def _staged(self, key: str) -> Iterator[BinaryIO]:
        """A temporary file to fill; renamed to `key`'s path when the block ends without error."""
        target = self._path(key)
        staging = self.root / STAGING_SEGMENT
        staging.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=staging, suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            self._place(Path(tmp_name), target, key)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    @staticmethod
    def _place(staged: Path, target: Path, key: str) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as error:
            raise ObjectStoreError(
                f"object key {key!r} clashes with another key (one is a folder of the other "
                "in a local store)"
            ) from error

    def put_bytes(self, key: str, payload: bytes) -> ObjectInfo:
        with self._staged(key) as handle:
            handle.write(payload)
        return ObjectInfo(key, len(payload), hashlib.sha256(payload).hexdigest())

    def put_file(self, key: str, source: Path) -> ObjectInfo:
        """A hard link to `source` where the file system allows (a model's folder in the data
        dir and the default store are one disk: no second copy of its weights), else a copy.
        clipft replaces files by renames, never writes into them, so the two stay alike."""
        target = self._path(key)
        staging = self.root / STAGING_SEGMENT
        staging.mkdir(parents=True, exist_ok=True)
        link = staging / f"{uuid.uuid4().hex}.partial"
        try:
            os.link(source, link)
        except OSError:  # another file system, or one without links
            with self._staged(key) as handle, source.open("rb") as reader:
                size, sha256 = copy_hashing(reader, handle)
            return ObjectInfo(key, size, sha256)
        try:
            info = ObjectInfo(key, link.stat().st_size, sha256_of_file(link))
            self._place(link, target, key)
        finally:
            link.unlink(missing_ok=True)
        return info

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def download_to(self, key: str, target: Path) -> ObjectInfo:
        source = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    reader = source.open("rb")
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    raise ObjectNotFound(key) from None
                with reader:
                    size, sha256 = copy_hashing(reader, handle)
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return ObjectInfo(key, size, sha256)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        try:
            return ObjectInfo(key, path.stat().st_size, sha256_of_file(path))
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Only the folder the prefix's last `/` names can hold matching keys.
        start = self.root.joinpath(*prefix.rpartition("/")[0].split("/")) if "/" in prefix else None
        keys: list[str] = []
        for folder, dirs, files in os.walk(start or self.root):
            relative = Path(folder).relative_to(self.root).as_posix()
            base = "" if relative == "." else f"{relative}/"
            if base == "":
                dirs[:] = [name for name in dirs if name != STAGING_SEGMENT]
            keys.extend(base + name for name in files if (base + name).startswith(prefix))
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            path.unlink()
        self._prune_empty_folders(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix, folder=True)
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def _prune_empty_folders(self, folder: Path) -> None:
        """Folders left empty by a delete go too, so a later key may take their name as a file."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone already
                return
            folder = folder.parent
