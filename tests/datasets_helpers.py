"""Small images and zip archives, good and hostile, for the dataset upload tests."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Iterable
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

Entry = tuple[str | zipfile.ZipInfo, bytes | str]
EXIF_ORIENTATION = 0x0112

PALETTE = [(220, 40, 40), (40, 180, 60), (50, 80, 220), (230, 210, 40), (200, 200, 200)]


def image_bytes(
    size: tuple[int, int] = (8, 8),
    colour: tuple[int, int, int] = (200, 30, 30),
    image_format: str = "PNG",
    mode: str = "RGB",
    exif_orientation: int | None = None,
) -> bytes:
    image = Image.new("RGB", size, colour).convert(mode)
    buffer = io.BytesIO()
    if exif_orientation is None:
        image.save(buffer, format=image_format)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = exif_orientation
        image.save(buffer, format=image_format, exif=exif)
    return buffer.getvalue()


def grey_ramp_bytes(dtype: str, high: float, image_format: str, size: int = 64) -> bytes:
    """A square grey ramp from 0 (left) to `high` (right) stored as `dtype`: 16-bit, float, ...

    Its values are an 8-bit ramp's, scaled to `high`: read back at 8 bits, it is that ramp.
    """
    ramp = np.linspace(0, 255, size).astype(np.uint8) / 255 * high
    values = ramp if np.dtype(dtype).kind == "f" else np.rint(ramp)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(values.astype(dtype), (size, 1))).save(buffer, format=image_format)
    return buffer.getvalue()


def grey_ramp_8_bit(size: int = 64) -> bytes:
    """The same ramp as `grey_ramp_bytes` stores it, at 8 bits."""
    return grey_ramp_bytes("uint8", 255, "PNG", size)


def make_zip(entries: Iterable[Entry], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, payload in entries:
            archive.writestr(name, payload)
    return buffer.getvalue()


def symlink_entry(name: str, target: str) -> Entry:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so the mode bits are meaningful
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


def class_entries(counts: dict[str, int], prefix: str = "") -> list[Entry]:
    """`<prefix><class>/<n>.png` images, each class its own colour, each image a bit different."""
    entries: list[Entry] = []
    for index, (label, count) in enumerate(sorted(counts.items())):
        red, green, blue = PALETTE[index % len(PALETTE)]
        for number in range(count):
            colour = (red, green, (blue + number) % 256)
            entries.append((f"{prefix}{label}/{number:03d}.png", image_bytes(colour=colour)))
    return entries


def class_zip(counts: dict[str, int], prefix: str = "") -> bytes:
    return make_zip(class_entries(counts, prefix))


def patch_central_header(
    archive: bytes, *, flag_bits: int | None = None, file_size: int | None = None
) -> bytes:
    """Rewrite fields of the first central directory record: headers a hostile zip can lie in."""
    data = bytearray(archive)
    at = data.index(b"PK\x01\x02")
    if flag_bits is not None:
        struct.pack_into("<H", data, at + 8, flag_bits)
    if file_size is not None:
        struct.pack_into("<I", data, at + 24, file_size)
    return bytes(data)


def upload(
    client: TestClient,
    payload: bytes,
    filename: str = "set.zip",
    name: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    data = {"name": name} if name is not None else None
    return client.post(
        "/datasets",
        files={"file": (filename, payload, "application/zip")},
        data=data,
        **kwargs,
    )
