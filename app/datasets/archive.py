"""Open an uploaded zip safely: names, links, entry count and sizes are checked before any read.

Entries are only ever read into memory, never extracted by their own names, so a hostile path
cannot write anywhere; the path checks still reject such archives, to say clearly what is wrong.
"""

from __future__ import annotations

import io
import lzma
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import ClientError, PayloadTooLarge

READ_CHUNK_BYTES = 1024 * 1024
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ENCRYPTED_FLAG = 0x1
# What a damaged or unsupported entry raises while it is decompressed (bz2 raises OSError,
# encrypted entries RuntimeError, unknown methods NotImplementedError).
_ENTRY_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_uncompressed_bytes: int
    max_compression_ratio: float
    # Each entry is read whole into memory: one larger than any acceptable image is refused
    # by its declared size before anything is read.
    max_entry_bytes: int


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    """The path exactly as the zip spells it: what error messages and the manifest show."""
    parts: tuple[str, ...]
    """Its folders and file name, with empty and `.` parts dropped."""
    is_dir: bool
    info: zipfile.ZipInfo


class SafeArchive:
    """A zip whose entries passed the checks; `read` is bounded by each entry's declared size."""

    def __init__(self, zip_file: zipfile.ZipFile, entries: list[ArchiveEntry]) -> None:
        self._zip_file = zip_file
        self.entries = entries

    def read(self, entry: ArchiveEntry) -> bytes:
        """Read one entry in chunks, stopping as soon as it outgrows its declared size.

        The chunks go into one growing buffer whose bytes are handed over without a copy,
        so the entry is held about once, not twice (its chunks, then their join).
        """
        declared = entry.info.file_size
        buffer = io.BytesIO()
        try:
            with self._zip_file.open(entry.info) as stream:
                while chunk := stream.read(READ_CHUNK_BYTES):
                    # Declared sizes passed the entry, total and ratio limits, so holding
                    # each entry to its declared size bounds all a lying header could unpack.
                    if buffer.tell() + len(chunk) > declared:
                        raise PayloadTooLarge(
                            f"{entry.name}: unpacks to more than the {declared} bytes "
                            "its header declares"
                        )
                    buffer.write(chunk)
        except _ENTRY_READ_ERRORS as error:
            raise ClientError(f"{entry.name}: cannot be read from the zip: {error}") from None
        # CPython's BytesIO gives its own buffer to the first getvalue() rather than a copy.
        return buffer.getvalue()


@contextmanager
def open_archive(path: Path, *, archive_name: str, limits: ArchiveLimits) -> Iterator[SafeArchive]:
    """Open the zip at `path` and check every entry; errors name `archive_name` or the entry."""
    try:
        zip_file = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, ValueError) as error:
        # NotImplementedError: an entry needs a newer zip version than Python can read.
        raise ClientError(f"{archive_name}: not a zip archive ({error})") from None
    with zip_file:
        yield SafeArchive(zip_file, check_entries(zip_file.infolist(), archive_name, limits))


def check_entries(
    infos: list[zipfile.ZipInfo], archive_name: str, limits: ArchiveLimits
) -> list[ArchiveEntry]:
    """Refuse unsafe names and links, too many entries, and sizes that look like a zip bomb."""
    if len(infos) > limits.max_entries:
        raise PayloadTooLarge(
            f"{archive_name}: has {len(infos)} entries, over the limit of {limits.max_entries}"
        )
    seen: set[str] = set()
    for info in infos:
        _check_name(info.filename)
        _check_type_and_flags(info)
        if info.filename in seen:
            raise ClientError(f"{info.filename}: appears more than once in the archive")
        seen.add(info.filename)
    _check_sizes(infos, archive_name, limits)
    return [_entry(info) for info in infos]


def _check_name(name: str) -> None:
    if "\\" in name:
        problem = "has a backslash in its path"
    elif name.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE_LETTER.match(name):
        problem = "starts with a drive letter"
    elif ".." in name.split("/"):
        problem = "climbs out of its folder with '..'"
    else:
        return
    raise ClientError(f"{name}: unsafe path in the archive: it {problem}")


def _check_type_and_flags(info: zipfile.ZipInfo) -> None:
    # Unix tools keep the file mode in the high 16 bits; zips made elsewhere leave them zero.
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ClientError(f"{info.filename}: symbolic links are not allowed in the archive")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ClientError(f"{info.filename}: special files are not allowed in the archive")
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise ClientError(f"{info.filename}: encrypted entries are not supported")


def _check_sizes(infos: list[zipfile.ZipInfo], archive_name: str, limits: ArchiveLimits) -> None:
    total = sum(info.file_size for info in infos)
    if total > limits.max_uncompressed_bytes:
        raise PayloadTooLarge(
            f"{archive_name}: unpacks to {total} bytes, "
            f"over the limit of {limits.max_uncompressed_bytes}"
        )
    for info in infos:
        if info.file_size > limits.max_entry_bytes:
            raise PayloadTooLarge(
                f"{info.filename}: declares {info.file_size} bytes unpacked, over the limit of "
                f"{limits.max_entry_bytes} for one file"
            )
        if info.file_size == 0:
            continue
        ratio = info.file_size / info.compress_size if info.compress_size else float("inf")
        if ratio > limits.max_compression_ratio:
            raise PayloadTooLarge(
                f"{info.filename}: compression ratio {ratio:.0f} is over the limit of "
                f"{limits.max_compression_ratio:g}"
            )


def _entry(info: zipfile.ZipInfo) -> ArchiveEntry:
    parts = tuple(part for part in info.filename.split("/") if part not in ("", "."))
    return ArchiveEntry(name=info.filename, parts=parts, is_dir=info.is_dir(), info=info)
