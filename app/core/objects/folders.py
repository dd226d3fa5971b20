"""Folders (a checkpoint, a model) published whole: a reader sees all of one or nothing.

A folder `F` is published as objects under a version of its own, `F/<version>/<file>`, and then
one object more, its manifest `F/MANIFEST.json`, that names the version and each file's size
and SHA-256. The manifest is written last and in one put, so it is the commit marker: a folder
whose upload died half-way has no manifest (or still the previous one) and no reader sees it,
and every download is checked against the sizes and checksums the manifest promises.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from app.core.objects.store import (
    CorruptObject,
    InvalidObjectKey,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    validate_key,
    validate_prefix,
)
from app.core.storage import atomic_dir, new_id

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ManifestEntry:
    name: str  # relative to the folder, `/`-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    folder: str
    version: str
    files: tuple[ManifestEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def key(self, entry: ManifestEntry) -> str:
        """The object that holds `entry`'s bytes."""
        return f"{self.folder}/{self.version}/{entry.name}"

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "folder": self.folder,
                "version": self.version,
                "files": [
                    {"name": entry.name, "size": entry.size, "sha256": entry.sha256}
                    for entry in self.files
                ],
            },
            indent=1,
        ).encode()

    @classmethod
    def from_bytes(cls, payload: bytes, *, folder: str) -> Manifest:
        """The manifest in `payload`, checked: `CorruptObject` if any part of it is not what
        `publish_folder` writes (a name that could leave the folder is such a part)."""
        where = f"{folder}/{MANIFEST_NAME}"
        try:
            document = json.loads(payload)
            if document["format"] != MANIFEST_FORMAT or document["folder"] != folder:
                raise ValueError("it is of another format or folder")
            version = document["version"]
            if not isinstance(version, str) or not _VERSION.match(version):
                raise ValueError(f"version {version!r}")
            files = []
            for item in document["files"]:
                name, size, sha256 = item["name"], item["size"], item["sha256"]
                validate_key(name)
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ValueError(f"size {size!r} of {name!r}")
                if not isinstance(sha256, str) or not _SHA256.match(sha256):
                    raise ValueError(f"sha256 {sha256!r} of {name!r}")
                files.append(ManifestEntry(name, size, sha256))
        except (ValueError, KeyError, TypeError, InvalidObjectKey) as error:
            raise CorruptObject(f"manifest {where} is not valid: {error}") from None
        if len({entry.name for entry in files}) != len(files):
            raise CorruptObject(f"manifest {where} names a file twice")
        return cls(folder, version, tuple(files))


def _manifest_key(folder: str) -> str:
    return f"{validate_key(folder)}/{MANIFEST_NAME}"


def _files_under(source: Path) -> list[tuple[str, Path]]:
    """Every file under `source` by its `/`-separated relative name; links are refused."""
    found = []
    for root, dirs, files in os.walk(source):
        for name in (*dirs, *files):
            if os.path.islink(os.path.join(root, name)):
                raise ObjectStoreError(f"{name} in a folder to publish is a link")
        for name in files:
            path = Path(root, name)
            found.append((path.relative_to(source).as_posix(), path))
    return sorted(found)


def publish_folder(store: ObjectStore, source: Path, folder: str) -> Manifest:
    """Upload every file under `source` as the folder `folder`, the manifest last, then remove
    the version it replaces. A failure before the manifest leaves the folder as it was."""
    if not source.is_dir():
        raise ObjectStoreError(f"{source.name} is not a folder to publish")
    manifest_key = _manifest_key(folder)
    previous = read_manifest(store, folder)
    version = new_id()
    entries = []
    for name, path in _files_under(source):
        info = store.put_file(f"{folder}/{version}/{validate_key(name)}", path)
        assert info.sha256 is not None  # the store hashed what it wrote
        entries.append(ManifestEntry(name, info.size, info.sha256))
    manifest = Manifest(folder, version, tuple(entries))
    store.put_bytes(manifest_key, manifest.to_bytes())
    if previous is not None and previous.version != version:
        store.delete_prefix(f"{folder}/{previous.version}/")
    return manifest


def read_manifest(store: ObjectStore, folder: str) -> Manifest | None:
    """The folder's manifest, or None while it is not published."""
    try:
        payload = store.get_bytes(_manifest_key(folder))
    except ObjectNotFound:
        return None
    return Manifest.from_bytes(payload, folder=folder)


def published_folders(store: ObjectStore, parent: str) -> list[str]:
    """The folders directly under `parent/` that have a manifest, sorted."""
    prefix = validate_prefix(f"{parent.rstrip('/')}/", folder=True)
    folders = []
    for key in store.list(prefix):
        name, _, rest = key.removeprefix(prefix).partition("/")
        if rest == MANIFEST_NAME:
            folders.append(prefix + name)
    return folders


def download_folder(store: ObjectStore, folder: str, target: Path) -> Manifest:
    """Write the published folder to `target`, whole (`atomic_dir`) and checked file by file
    against its manifest: `CorruptObject` if a size or checksum differs, `ObjectNotFound` if it
    is not published. A folder republished while it downloads is downloaded again, once."""
    for attempt in range(2):
        manifest = read_manifest(store, folder)
        if manifest is None:
            raise ObjectNotFound(_manifest_key(folder))
        try:
            with atomic_dir(target) as staging:
                for entry in manifest.files:
                    info = store.download_to(manifest.key(entry), staging / entry.name)
                    check_entry(manifest, entry, size=info.size, sha256=info.sha256)
            return manifest
        except ObjectNotFound:
            # The version went while we read it: a new one replaced it, or the folder went.
            if attempt == 1 or read_manifest(store, folder) == manifest:
                raise
    raise AssertionError("unreachable")


def check_entry(manifest: Manifest, entry: ManifestEntry, *, size: int, sha256: str | None) -> None:
    """`CorruptObject` unless the bytes read for `entry` are those the manifest promises."""
    if size != entry.size or sha256 != entry.sha256:
        raise CorruptObject(
            f"{manifest.key(entry)}: {size} bytes with SHA-256 {sha256}, but its manifest says "
            f"{entry.size} bytes with SHA-256 {entry.sha256}"
        )


def delete_folder(store: ObjectStore, folder: str) -> None:
    """Unpublish `folder` (its manifest goes first, so no reader finds half of it), then remove
    every object under it, versions of uploads that never finished included."""
    store.delete(_manifest_key(folder))
    store.delete_prefix(f"{folder}/")
