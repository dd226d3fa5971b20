"""`CLIPFT_STORAGE_URL`: which backend holds the artefacts, read without opening anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

# What S3 allows in a bucket's name (and SeaweedFS checks): 3 to 63 of a-z, 0-9, `.`, `-`.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class LocalLocation:
    root: Path


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str


def parse_storage_url(url: str | None, *, data_dir: Path) -> LocalLocation | S3Location:
    """Unset: the folder `objects` in the data dir; `file:///abs/path`: a folder;
    `s3://bucket/prefix`: a bucket. `ValueError` saying what is wrong otherwise."""
    if not url:
        return LocalLocation(data_dir / "objects")
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"CLIPFT_STORAGE_URL {url!r}: a file URL names an absolute folder")
        return LocalLocation(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not _BUCKET.match(parts.netloc):
            raise ValueError(
                f"CLIPFT_STORAGE_URL {url!r}: {parts.netloc!r} is not a bucket name "
                "(3 to 63 of a-z, 0-9, `.` and `-`)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"CLIPFT_STORAGE_URL {url!r}: no query or fragment")
        prefix = parts.path.strip("/")
        if prefix and any(segment in ("", ".", "..") for segment in prefix.split("/")):
            raise ValueError(f"CLIPFT_STORAGE_URL {url!r}: the prefix has an empty or `..` part")
        return S3Location(parts.netloc, prefix)
    raise ValueError(
        f"CLIPFT_STORAGE_URL {url!r}: use s3://bucket/prefix or file:///folder (or leave it "
        "unset for a folder in the data dir)"
    )
