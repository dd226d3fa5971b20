"""A bounded cache on local disk of what a process reads from the store (models, arrays).

Entries live in `<root>/entries/`: an object by the SHA-256 of its bytes (`o-<sha256>`), a
published folder by the SHA-256 of its manifest (`f-<sha256>`), so a republished folder is a
new entry and the old one ages out. A download is staged in `<root>/staging/`, checked against
the size and checksum the caller or the manifest promises, and renamed into `entries/` under an
exclusive lock on `<root>/cache.lock`, which also guards eviction: the processes of one machine
(the api's, a worker's) share one cache. Before an entry is handed out its sizes are checked, and
its checksums once per process and file; an entry that fails is removed and fetched again.

Eviction takes the least recently used entries (their access times, set at each use) until the
new one fits under `max_bytes`. An entry larger than the whole limit is kept alone: a model must
load. An entry handed out is the most recently used, so another process evicts it last; a caller
opens what it got at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from app.core.config import Settings
from app.core.objects.folders import Manifest, download_folder, read_manifest
from app.core.objects.store import CorruptObject, ObjectNotFound, ObjectStore, sha256_of_file
from app.core.storage import folder_bytes, new_id

ENTRIES = "entries"
STAGING = "staging"
LOCK_NAME = "cache.lock"


class ObjectCache:
    def __init__(self, store: ObjectStore, root: Path, max_bytes: int) -> None:
        self.store = store
        self.root = root
        self.max_bytes = max_bytes
        self.entries = root / ENTRIES
        self.staging = root / STAGING
        # Files whose checksum this process has checked: (path, inode, mtime, size).
        self._verified: set[tuple[str, int, int, int]] = set()

    def file(self, key: str, *, size: int, sha256: str) -> Path:
        """A local copy of the object `key` whose bytes are `size` long with `sha256`;
        `CorruptObject` if the store's bytes are not those."""
        entry = self.entries / f"o-{sha256}"
        if self._usable(entry, lambda: self._intact(entry, size, sha256)):
            return entry
        staged = self._staging_path()
        try:
            info = self.store.download_to(key, staged)
            if (info.size, info.sha256) != (size, sha256):
                raise CorruptObject(
                    f"{key}: {info.size} bytes with SHA-256 {info.sha256}, expected {size} "
                    f"bytes with SHA-256 {sha256}"
                )
            return self._admit(staged, entry)
        finally:
            _remove(staged)

    def folder(self, folder: str) -> Path:
        """A local copy of the published folder `folder`, as its current manifest describes
        it; `ObjectNotFound` if it is not published."""
        manifest = read_manifest(self.store, folder)
        if manifest is None:
            raise ObjectNotFound(f"{folder}/")
        entry = self.entries / _folder_entry_name(manifest)
        if self._usable(entry, lambda: self._intact_folder(entry, manifest)):
            return entry
        staged = self._staging_path()
        try:
            # What was downloaded may be a newer manifest than the one just read.
            downloaded = download_folder(self.store, folder, staged)
            return self._admit(staged, self.entries / _folder_entry_name(downloaded))
        finally:
            _remove(staged)

    def used_bytes(self) -> int:
        if not self.entries.is_dir():
            return 0
        return sum(_entry_bytes(path) for path in self.entries.iterdir())

    def _staging_path(self) -> Path:
        """A new path in the staging folder (made on first use: an api that never reads from
        the store leaves no cache folder behind)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / new_id()

    def _usable(self, entry: Path, intact: Callable[[], bool]) -> bool:
        """Whether `entry` is there and intact (marked used if so); a damaged one is removed."""
        if not entry.exists():
            return False
        if intact():
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                os.utime(entry, ns=(time.time_ns(), st.st_mtime_ns))
                return True
            return False
        with self._locked():
            _remove(entry)
        return False

    def _intact(self, path: Path, size: int, sha256: str) -> bool:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        if not path.is_file() or st.st_size != size:
            return False
        identity = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
        if identity in self._verified:
            return True
        try:
            if sha256_of_file(path) != sha256:
                return False
        except FileNotFoundError:
            return False
        self._verified.add(identity)
        return True

    def _intact_folder(self, folder: Path, manifest: Manifest) -> bool:
        return all(
            self._intact(folder / item.name, item.size, item.sha256) for item in manifest.files
        )

    def _admit(self, staged: Path, entry: Path) -> Path:
        """Move a checked download into the cache, evicting what it must to fit."""
        incoming = _entry_bytes(staged)
        with self._locked():
            if entry.exists():  # another process fetched it meanwhile
                return entry
            self.entries.mkdir(exist_ok=True)
            by_age = sorted(self.entries.iterdir(), key=_last_used_ns)
            used = sum(_entry_bytes(path) for path in by_age)
            for oldest in by_age:
                if used + incoming <= self.max_bytes:
                    break
                used -= _entry_bytes(oldest)
                _remove(oldest)
            os.replace(staged, entry)
            os.utime(entry, ns=(time.time_ns(), entry.stat().st_mtime_ns))
        return entry

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK_NAME).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def open_cache(settings: Settings, store: ObjectStore) -> ObjectCache:
    """The cache the settings describe (`CLIPFT_CACHE_DIR`, `CLIPFT_CACHE_MAX_BYTES`)."""
    return ObjectCache(store, settings.resolved_cache_dir, settings.cache_max_bytes)


def _folder_entry_name(manifest: Manifest) -> str:
    return f"f-{hashlib.sha256(manifest.to_bytes()).hexdigest()}"


def _entry_bytes(path: Path) -> int:
    try:
        return folder_bytes(path) if path.is_dir() else path.stat().st_size
    except FileNotFoundError:
        return 0


def _last_used_ns(path: Path) -> int:
    try:
        return path.stat().st_atime_ns
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    """Remove a file or a folder; a folder is renamed aside first, so no half one is found."""
    if path.is_dir() and not path.is_symlink():
        aside = path.with_name(f".{path.name}.removing-{new_id()[:8]}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
