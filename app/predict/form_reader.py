"""A `/predict` multipart body, read part by part as it arrives.

Text fields are kept; each `files` part is handed on the moment its last byte arrives, so its
decoding can start while the rest of the body is still on the wire. Every limit is enforced
while reading: an image over the byte limit is counted but never held, the number of images
and fields is capped, and a text field is capped at `max_field_bytes`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import PayloadTooLarge, Unprocessable
from app.http.multipart_parts import PartReader, feed_parts, require_closing_boundary
from app.predict.inputs import ImageUpload, check_image_size

FILES_FIELD = "files"


@dataclass(frozen=True)
class FormLimits:
    max_images: int
    max_image_bytes: int
    max_texts: int
    # Fields besides the texts: model_id or model_ids, top_k, labels and a few spare.
    max_other_fields: int
    max_field_bytes: int

    @property
    def max_fields(self) -> int:
        return self.max_texts + self.max_other_fields


@dataclass
class ReceivedForm:
    # Each text field's values in the order sent (a field may repeat).
    fields: dict[str, list[str]] = field(default_factory=dict)
    images: list[ImageUpload] = field(default_factory=list)


# Called with each image as it completes, and the text fields received before it.
ImageArrived = Callable[[ImageUpload, dict[str, list[str]]], None]


class _FormParts(PartReader):
    def __init__(self, limits: FormLimits, on_image: ImageArrived) -> None:
        super().__init__()
        self.limits = limits
        self.on_image = on_image
        self.form = ReceivedForm()
        self._file_parts = 0  # parts named `files`, whatever they hold: how errors number them
        self._text_fields = 0
        self._name = ""
        self._image_name: str | None = None
        self._chunks: list[memoryview] = []
        self._size = 0

    def start_part(self, name: str, filename: str | None) -> None:
        self._name, self._chunks, self._size = name, [], 0
        self._image_name = None
        if name == FILES_FIELD:
            index = self._file_parts
            self._file_parts += 1
            if filename is None:
                raise Unprocessable(f"files[{index}] must be a file upload, not a text field")
            if len(self.form.images) >= self.limits.max_images:
                raise PayloadTooLarge(
                    f"too many images: at most {self.limits.max_images} per request"
                )
            self._image_name = f"file {filename!r}" if filename else f"files[{index}]"
            return
        if filename is not None:
            raise Unprocessable(f"{name} must be a text field, not a file")
        self._text_fields += 1
        if self._text_fields > self.limits.max_fields:
            raise PayloadTooLarge(
                f"too many form fields: at most {self.limits.max_texts} texts per request"
            )

    def part_data(self, data: memoryview) -> None:
        self._size += len(data)
        if self._image_name is not None:
            # Past the limit the bytes are only counted, so that the 413 can say how many.
            if self._size <= self.limits.max_image_bytes:
                self._chunks.append(data)
            return
        if self._size > self.limits.max_field_bytes:
            raise PayloadTooLarge(
                f"a form field is too large: {self._name} is over "
                f"{self.limits.max_field_bytes} bytes"
            )
        self._chunks.append(data)

    def end_part(self) -> None:
        if self._image_name is not None:
            check_image_size(
                name=self._image_name, size=self._size, max_bytes=self.limits.max_image_bytes
            )
            image = ImageUpload(name=self._image_name, payload=b"".join(self._chunks))
            self.form.images.append(image)
            self.on_image(image, self.form.fields)
            return
        try:
            text = b"".join(self._chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise Unprocessable(f"{self._name}: not UTF-8 text") from None
        self.form.fields.setdefault(self._name, []).append(text)


async def read_form(
    chunks: AsyncIterator[bytes], *, boundary: bytes, limits: FormLimits, on_image: ImageArrived
) -> ReceivedForm:
    """Parse the body's chunks as they come; `on_image` is called for each image in order."""
    parts = _FormParts(limits, on_image)
    await feed_parts(
        parts,
        chunks,
        boundary=boundary,
        # On the event loop: parsing only slices and appends bytes, and handing an image on
        # only queues its decoding; a thread hop per chunk would cost more than both.
        in_thread=False,
        disconnected="the client disconnected before the body ended",
    )
    require_closing_boundary(parts)
    return parts.form


def form_list(key: str, values: list[str]) -> Any:
    """A repeated field's values as they are, or one field holding a JSON array of strings."""
    if len(values) != 1 or not values[0].lstrip().startswith("["):
        return values
    try:
        return json.loads(values[0])
    except json.JSONDecodeError as error:
        raise Unprocessable(
            f"{key} looks like a JSON array but is not valid JSON: {error}"
        ) from None
