"""Turn a checked zip into a dataset folder: find the layout, decode each image once, split it.

Layouts follow the Hugging Face `imagefolder` conventions: class folders (`cat/001.jpg`), or
images plus a root `metadata.csv` / `metadata.jsonl` with `file_name` and `text` or `label`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.errors import PayloadTooLarge, Unprocessable
from app.core.storage import atomic_write_json
from app.datasets.archive import ArchiveEntry, ArchiveLimits, SafeArchive, open_archive
from app.datasets.image_store import store_images
from app.ml.images import ImageLimits
from app.ml.manifest import MANIFEST_NAME, DatasetKind, Manifest, ManifestItem, Split

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
_COLUMN_KIND: dict[str, DatasetKind] = {"label": "classification", "text": "captions"}
# As long as a zero-shot label may be on /predict.
MAX_CLASS_NAME_CHARS = 200


@dataclass(frozen=True)
class PlannedItem:
    """An image entry to decode, with its class label or caption."""

    entry: ArchiveEntry
    label: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Plan:
    kind: DatasetKind
    items: list[PlannedItem]


@dataclass(frozen=True)
class MetadataRow:
    line: int
    values: dict[str, Any]


def ingest_archive(
    *, archive_path: Path, archive_name: str, dataset_dir: Path, settings: Settings
) -> Manifest:
    """Check the zip, store every image as an RGB PNG under `images/`, write `manifest.json`."""
    limits = ArchiveLimits(
        max_entries=settings.max_archive_entries,
        max_uncompressed_bytes=settings.max_uncompressed_bytes,
        max_compression_ratio=settings.max_compression_ratio,
        max_entry_bytes=settings.max_archive_entry_bytes,
    )
    with open_archive(archive_path, archive_name=archive_name, limits=limits) as archive:
        plan = plan_items(archive, archive_name, max_metadata_bytes=settings.max_metadata_bytes)
        files = store_images(
            archive,
            [item.entry for item in plan.items],
            dataset_dir=dataset_dir,
            limits=ImageLimits(max_pixels=settings.max_image_pixels),
            max_side=settings.stored_image_max_side,
            threads=settings.ingest_threads,
        )
    val_sources = choose_val(
        _split_groups(plan), val_fraction=settings.val_fraction, seed=settings.split_seed
    )
    manifest = _manifest(plan, files, val_sources)
    atomic_write_json(dataset_dir / MANIFEST_NAME, manifest.to_json())
    return manifest


def plan_items(archive: SafeArchive, archive_name: str, *, max_metadata_bytes: int) -> Plan:
    """Find the layout and list the images with their labels or captions, sorted by path."""
    entries = [entry for entry in archive.entries if not _ignored(entry)]
    depth = _wrapper_depth(entries)
    # Drop the wrapper folder itself (and anything else that becomes the root).
    relative = {entry: entry.parts[depth:] for entry in entries if entry.parts[depth:]}
    _refuse_files_that_share_a_path(relative)
    metadata = [e for e, path in relative.items() if len(path) == 1 and path[0] in METADATA_NAMES]
    if len(metadata) > 1:
        raise Unprocessable(
            f"{archive_name}: has both metadata.csv and metadata.jsonl at its root; keep one"
        )
    if metadata:
        plan = _plan_from_metadata(archive, metadata[0], relative, max_metadata_bytes)
    else:
        plan = _plan_from_folders(relative)
    if not plan.items:
        raise Unprocessable(f"{archive_name}: the archive contains no images")
    for item in plan.items:
        if item.label is not None:
            _check_class_name(item.label, item.entry.name)
    return Plan(plan.kind, sorted(plan.items, key=lambda item: item.entry.name))


def _refuse_files_that_share_a_path(relative: dict[ArchiveEntry, tuple[str, ...]]) -> None:
    # `img/2.png` and `img//2.png` are one path once empty and `.` parts are dropped: keeping
    # both would let one silently stand for the other.
    seen: dict[tuple[str, ...], ArchiveEntry] = {}
    for entry, path in relative.items():
        if entry.is_dir:
            continue
        first = seen.setdefault(path, entry)
        if first is not entry:
            raise Unprocessable(f"{entry.name}: the same path as {first.name}; keep one")


def _check_class_name(label: str, source: str) -> None:
    """A class name becomes a prompt and a label in every answer: printable text of a sane
    length."""
    if not label.strip():
        problem = "is only white space"
    elif any(unicodedata.category(char) == "Cc" for char in label):
        problem = "holds a control character (a newline, a tab, ...)"
    elif len(label) > MAX_CLASS_NAME_CHARS:
        problem = f"is {len(label)} characters, over the limit of {MAX_CLASS_NAME_CHARS}"
    else:
        return
    shown = label if len(label) <= 40 else f"{label[:40]}..."
    raise Unprocessable(f"{source}: class name {shown!r} {problem}")


def _ignored(entry: ArchiveEntry) -> bool:
    # macOS resource forks and hidden files (.DS_Store, ._x.jpg) are packing noise, not data.
    if not entry.parts:
        return True
    return entry.parts[0] == "__MACOSX" or any(part.startswith(".") for part in entry.parts)


def _wrapper_depth(entries: list[ArchiveEntry]) -> int:
    """1 when everything sits in one top folder that is a wrapper rather than a class folder."""
    if len({entry.parts[0] for entry in entries}) != 1:
        return 0
    files = [entry for entry in entries if not entry.is_dir]
    if any(len(entry.parts) == 1 for entry in files):
        return 0
    direct = [entry.parts[1] for entry in files if len(entry.parts) == 2]
    # Images directly inside the one folder make it the (only) class folder; subfolders or a
    # metadata file make it a wrapper.
    return 1 if not direct or any(name in METADATA_NAMES for name in direct) else 0


def _plan_from_folders(relative: dict[ArchiveEntry, tuple[str, ...]]) -> Plan:
    items: list[PlannedItem] = []
    for entry, path in relative.items():
        if entry.is_dir:
            continue
        if len(path) == 1:
            raise Unprocessable(
                f"{entry.name}: file at the top level; in the class-folder layout every image "
                "sits in a folder named after its class (or add a metadata.csv)"
            )
        if len(path) > 2:
            raise Unprocessable(
                f"{entry.name}: nested folder; images must sit directly inside their class folder"
            )
        items.append(PlannedItem(entry=entry, label=path[0]))
    classes = {item.label for item in items}
    for entry, path in relative.items():
        if entry.is_dir and len(path) == 1 and path[0] not in classes:
            raise Unprocessable(f"{entry.name}: class folder has no images")
    return Plan("classification", items)


def _plan_from_metadata(
    archive: SafeArchive,
    metadata: ArchiveEntry,
    relative: dict[ArchiveEntry, tuple[str, ...]],
    max_metadata_bytes: int,
) -> Plan:
    rows, columns = _read_metadata(archive, metadata, max_metadata_bytes)
    column = _value_column(metadata.name, columns)
    files = {path: e for e, path in relative.items() if not e.is_dir and e is not metadata}
    listed: dict[ArchiveEntry, PlannedItem] = {}
    for row in rows:
        entry = _row_entry(metadata.name, row, files)
        if entry in listed:
            raise Unprocessable(
                f"{metadata.name} line {row.line}: {entry.name} is listed more than once"
            )
        value = _required_text(metadata.name, row, column)
        listed[entry] = PlannedItem(
            entry=entry,
            label=value if column == "label" else None,
            text=value if column == "text" else None,
        )
    for entry in files.values():
        if entry not in listed:
            raise Unprocessable(f"{entry.name}: not listed in {metadata.name}")
    return Plan(_COLUMN_KIND[column], list(listed.values()))


def _read_metadata(
    archive: SafeArchive, metadata: ArchiveEntry, max_bytes: int
) -> tuple[list[MetadataRow], set[str]]:
    # By the declared size, before reading: the text and its rows are held several times over.
    if metadata.info.file_size > max_bytes:
        raise PayloadTooLarge(
            f"{metadata.name}: declares {metadata.info.file_size} bytes unpacked, over the "
            f"limit of {max_bytes} for a metadata file"
        )
    try:
        # utf-8-sig: spreadsheet programs often start a UTF-8 CSV with a byte order mark.
        text = archive.read(metadata).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Unprocessable(
            f"{metadata.name}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    if metadata.parts[-1].endswith(".csv"):
        return _read_csv(metadata.name, text)
    return _read_jsonl(metadata.name, text)


def _read_csv(name: str, text: str) -> tuple[list[MetadataRow], set[str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        rows = [MetadataRow(line=reader.line_num, values=dict(row)) for row in reader]
    except csv.Error as error:
        raise Unprocessable(f"{name} line {reader.line_num}: malformed CSV: {error}") from None
    return rows, set(reader.fieldnames or ())


def _read_jsonl(name: str, text: str) -> tuple[list[MetadataRow], set[str]]:
    rows: list[MetadataRow] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise Unprocessable(f"{name} line {line_number}: not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise Unprocessable(f"{name} line {line_number}: not a JSON object")
        rows.append(MetadataRow(line=line_number, values=values))
    # The first row names the columns, as a header would; later rows are checked one by one.
    return rows, set(rows[0].values) if rows else set()


def _value_column(name: str, columns: set[str]) -> str:
    if "file_name" not in columns:
        raise Unprocessable(f"{name}: missing column `file_name`")
    present = [column for column in _COLUMN_KIND if column in columns]
    if not present:
        raise Unprocessable(
            f"{name}: missing column: needs `text` (captions) or `label` (classification)"
        )
    if len(present) > 1:
        raise Unprocessable(f"{name}: has both `text` and `label` columns; keep one")
    return present[0]


def _row_entry(
    name: str, row: MetadataRow, files: dict[tuple[str, ...], ArchiveEntry]
) -> ArchiveEntry:
    file_name = _required_text(name, row, "file_name")
    # Only a lookup key among the checked entries: a hostile value can match nothing else.
    path = tuple(part for part in file_name.split("/") if part not in ("", "."))
    entry = files.get(path)
    if entry is None:
        raise Unprocessable(
            f"{name} line {row.line}: file_name {file_name!r} is not an image in the archive"
        )
    return entry


def _required_text(name: str, row: MetadataRow, column: str) -> str:
    value = row.values.get(column)
    if not isinstance(value, str) or not value.strip():
        raise Unprocessable(f"{name} line {row.line}: `{column}` is empty or missing")
    return value.strip()


def _split_groups(plan: Plan) -> dict[str, list[str]]:
    """Sources per class (one group for captions): the units the split is stratified over."""
    groups: dict[str, list[str]] = defaultdict(list)
    for item in plan.items:
        groups[item.label or ""].append(item.entry.name)
    return groups


def choose_val(groups: dict[str, list[str]], *, val_fraction: float, seed: int) -> set[str]:
    """Per group: sort, shuffle with a fresh `Random(seed)`, and take the first few for val."""
    val: set[str] = set()
    for members in groups.values():
        ordered = sorted(members)
        # A fresh generator per group: adding a class never reshuffles the others.
        random.Random(seed).shuffle(ordered)
        val.update(ordered[: val_count(len(ordered), val_fraction)])
    return val


def val_count(size: int, val_fraction: float) -> int:
    """round(size * fraction), at least 1 once a group has 2 items, and never the whole group."""
    count = round(size * val_fraction)
    if val_fraction > 0 and size >= 2:
        count = max(count, 1)
    return max(0, min(count, size - 1))


def _manifest(plan: Plan, files: Iterable[str], val_sources: set[str]) -> Manifest:
    items = []
    for item, file in zip(plan.items, files, strict=True):
        split: Split = "val" if item.entry.name in val_sources else "train"
        items.append(
            ManifestItem(
                file=file, source=item.entry.name, split=split, label=item.label, text=item.text
            )
        )
    classes = sorted({item.label for item in plan.items if item.label is not None})
    return Manifest(kind=plan.kind, classes=classes, items=items)
