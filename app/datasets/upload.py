"""Stream a multipart upload to disk as it arrives, enforcing the size limit on the way.

The body is never held in memory: each chunk goes through a streaming multipart parser, the
`file` part is written to a file in the new dataset's folder, and small text fields are kept.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.datastructures import Headers
from starlette.requests import Request

from app.core.errors import PayloadTooLarge, Unprocessable
from app.http.multipart_parts import (
    PartReader,
    feed_parts,
    multipart_boundary,
    require_closing_boundary,
)
from app.http.request_body import refuse_declared_oversize, stream_within

FILE_FIELD = "file"
TEXT_FIELDS = frozenset({"name"})
MAX_TEXT_FIELD_BYTES = 4096
UPLOAD_FILE_NAME = "upload.zip.part"


@dataclass(frozen=True)
class ReceivedUpload:
    folder: Path
    path: Path
    filename: str | None
    """The client's name for the file, if it gave one."""
    fields: dict[str, str]


class _PartWriter(PartReader):
    """The `file` part goes to disk, known text fields to memory."""

    def __init__(self, target: Path) -> None:
        super().__init__()
        self.target = target
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self.saw_file = False
        self._field: str | None = None
        self._text = bytearray()
        self._file: BinaryIO | None = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def start_part(self, name: str, filename: str | None) -> None:
        self._field, self._text = name, bytearray()
        if name == FILE_FIELD:
            if self.saw_file:
                raise Unprocessable(f"{FILE_FIELD}: sent more than once; send one zip")
            self.saw_file = True
            self.filename = filename
            self._file = self.target.open("wb")

    def part_data(self, data: memoryview) -> None:
        if self._file is not None:
            self._file.write(data)
        elif self._field in TEXT_FIELDS:
            self._text += data
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise Unprocessable(f"{self._field}: over {MAX_TEXT_FIELD_BYTES} bytes")

    def end_part(self) -> None:
        if self._file is not None:
            self.close()
        elif self._field in TEXT_FIELDS:
            try:
                self.fields[self._field] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Unprocessable(f"{self._field}: not UTF-8 text") from None


async def receive_upload(request: Request, *, folder: Path, max_bytes: int) -> ReceivedUpload:
    """Stream the request's `file` part into `folder`, which is removed again on any failure."""
    boundary = _multipart_boundary(request.headers)
    refuse_declared_oversize(
        request.headers,
        max_bytes,
        lambda declared: PayloadTooLarge(
            f"{FILE_FIELD}: upload is {declared} bytes, over the limit of {max_bytes}"
        ),
    )
    folder.mkdir(parents=True)
    writer = _PartWriter(folder / UPLOAD_FILE_NAME)
    try:
        await _feed(request, writer, boundary, max_bytes)
        if not writer.saw_file:
            raise Unprocessable(f"{FILE_FIELD}: field required (a zip archive)")
        require_closing_boundary(writer)
    except BaseException:
        writer.close()
        # Nothing but the partial upload is in the folder yet, so this is quick.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return ReceivedUpload(
        folder=folder, path=writer.target, filename=writer.filename, fields=writer.fields
    )


def _multipart_boundary(headers: Headers) -> bytes:
    boundary = multipart_boundary(headers)
    if boundary is None:
        raise Unprocessable(
            f"{FILE_FIELD}: field required; send multipart/form-data with the zip in `{FILE_FIELD}`"
        )
    return boundary


async def _feed(request: Request, writer: _PartWriter, boundary: bytes, max_bytes: int) -> None:
    def too_large() -> PayloadTooLarge:
        return PayloadTooLarge(f"{FILE_FIELD}: upload is over the limit of {max_bytes} bytes")

    await feed_parts(
        writer,
        stream_within(request, max_bytes, too_large),
        boundary=boundary,
        # Parsing calls back into file writes: keep that blocking work off the loop.
        in_thread=True,
        disconnected=f"{FILE_FIELD}: the client disconnected before the upload ended",
    )
