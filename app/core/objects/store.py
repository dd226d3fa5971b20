"""The storage seam: what every backend of artefacts (a local folder, an S3 bucket) can do.

Keys are `/`-separated relative names (`models/<id>/<version>/model.safetensors`); a backend maps
them to paths or object names and never lets one reach outside its root or prefix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

MAX_KEY_BYTES = 1024
# The local backend keeps its partial writes under this first segment; no key may start there.
STAGING_SEGMENT = ".staging"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_CHUNK = 1024 * 1024


class ObjectStoreError(Exception):
    """Something the object store could not do; subclasses say what."""


class InvalidObjectKey(ObjectStoreError, ValueError):
    """A key that could name something outside the store (`..`, an absolute path) or nothing."""


class ObjectNotFound(ObjectStoreError, LookupError):
    """No object under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r}")
        self.key = key


class CorruptObject(ObjectStoreError):
    """An object whose bytes are not those its manifest (or its cache entry) promises."""


class StoreUnavailable(ObjectStoreError):
    """The store did not answer (connection refused, timeouts after retries)."""


@dataclass(frozen=True)
class ObjectInfo:
    """An object's size and the SHA-256 of its bytes (hex). `sha256` is None only for an object
    that clipft did not write into an S3 bucket (clipft records it as object metadata)."""

    key: str
    size: int
    sha256: str | None


class ObjectStore(Protocol):
    """Artefacts by key. Every write is atomic as seen by readers: an object is absent or whole."""

    @property
    def location(self) -> str:
        """Where the objects live, for logs and errors (`file:///…`, `s3://bucket/prefix`)."""
        ...

    def put_file(self, key: str, source: Path) -> ObjectInfo:
        """Store the bytes of `source` under `key`, replacing what was there. The caller never
        writes into `source` afterwards (replacing it by a rename is fine): the local backend
        may link the file rather than copy it."""
        ...

    def put_bytes(self, key: str, payload: bytes) -> ObjectInfo:
        """Store `payload` under `key`, replacing what was there."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` if there is none."""
        ...

    def download_to(self, key: str, target: Path) -> ObjectInfo:
        """Write the object to `target` (a temporary file beside it, then a rename); the info is
        that of the bytes written, hashed here."""
        ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and checksum; `ObjectNotFound` if there is none."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix`, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; nothing happens if there is none."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder `prefix` (which ends with `/`); how many went."""
        ...


def validate_key(key: str) -> str:
    """`key` itself when it is a clean relative name, else `InvalidObjectKey` saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidObjectKey("an object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"an object key may have at most {MAX_KEY_BYTES} bytes")
    if _CONTROL_CHARACTERS.search(key):
        raise InvalidObjectKey(f"object key {key!r} has a control character")
    if key.startswith("/") or "\\" in key or re.match(r"^[A-Za-z]:", key):
        raise InvalidObjectKey(f"object key {key!r} is absolute; keys are relative, `/`-separated")
    segments = key.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidObjectKey(
            f"object key {key!r} has an empty, `.` or `..` segment (or ends with `/`)"
        )
    if segments[0] == STAGING_SEGMENT:
        raise InvalidObjectKey(f"object keys may not start with {STAGING_SEGMENT}/")
    return key


def validate_prefix(prefix: str, *, folder: bool = False) -> str:
    """A listing prefix: "" (everything) or a key's beginning; a folder prefix ends with `/`."""
    if folder and not prefix.endswith("/"):
        raise InvalidObjectKey(f"prefix {prefix!r} must name a folder: end it with `/`")
    if prefix == "" and not folder:
        return prefix
    validate_key(prefix.removesuffix("/"))
    return prefix


def sha256_of_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def copy_hashing(source: BinaryIO, target: BinaryIO) -> tuple[int, str]:
    """Copy `source` into `target`; the bytes copied and their SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        target.write(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
