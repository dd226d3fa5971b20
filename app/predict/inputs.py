"""What a read `/predict` or `/embed` request hands on: its images and options, checked.

The checks here run before any image is decoded or any text tokenized, whichever form (JSON or
multipart) the request came in.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from app.core.config import Settings
from app.core.errors import PayloadTooLarge, Unprocessable
from app.inference.pixels import PendingPixels


@dataclass(frozen=True)
class ImageUpload:
    # How error messages name the image: `images[2]` (JSON) or `file 'cat.png'` (multipart).
    name: str
    payload: bytes


@dataclass(frozen=True)
class PredictInput:
    # One model, or two or more whose answers are averaged (an ensemble).
    model_ids: list[str]
    images: list[ImageUpload]
    texts: list[str] | None
    top_k: int
    # The request's abstain threshold; None: the model's default, if it has one.
    min_confidence: float | None = None
    # Zero-shot: a base model in place of trained ones, with the labels to classify over.
    base_model: str | None = None
    labels: list[str] | None = None
    prompt_templates: list[str] | None = None
    # Images already decoding for one model's pixel spec while the body arrived (multipart).
    pending_pixels: PendingPixels | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.model_ids) > 1


def check_request(*, num_images: int, texts: list[str] | None, settings: Settings) -> None:
    """Refuse no images, too many images or texts, and empty texts, before any decoding."""
    if num_images == 0:
        raise Unprocessable(
            "no images: send at least one (`images` in JSON, `files` in multipart/form-data)"
        )
    check_image_count(num_images, settings)
    if texts is None:
        return
    if not texts:
        raise Unprocessable(
            "texts is empty: send at least one text, or leave texts out to classify over the "
            "model's labels"
        )
    check_texts(texts, settings)


def check_image_count(num_images: int, settings: Settings) -> None:
    """Refuse more images than one request may send."""
    if num_images > settings.predict_max_images:
        raise PayloadTooLarge(
            f"too many images: at most {settings.predict_max_images} per request, got {num_images}"
        )


def check_texts(texts: list[str], settings: Settings) -> None:
    """Refuse too many texts, empty ones and long ones, before any is tokenized."""
    if len(texts) > settings.predict_max_texts:
        raise PayloadTooLarge(
            f"too many texts: at most {settings.predict_max_texts} per request, got {len(texts)}"
        )
    limit = settings.predict_max_text_chars
    for index, text in enumerate(texts):
        if len(text) > limit:
            raise Unprocessable(
                f"texts[{index}] is {len(text)} characters, over the limit of {limit} "
                "(CLIP reads only its first 77 tokens)"
            )
        if not text.strip():
            raise Unprocessable(f"texts[{index}] is empty")


def check_image_size(*, name: str, size: int, max_bytes: int) -> None:
    """Refuse an image over the per-image byte limit with a 413 that names it."""
    if size > max_bytes:
        raise PayloadTooLarge(f"{name} is {size} bytes, over the limit of {max_bytes}")


def decode_base64_images(*, images: list[str]) -> list[ImageUpload]:
    """Decode JSON's base64 images (a `data:` URL prefix is allowed), naming any bad one."""
    return [
        ImageUpload(name=f"images[{index}]", payload=_decode_base64(text, name=f"images[{index}]"))
        for index, text in enumerate(images)
    ]


def _decode_base64(text: str, *, name: str) -> bytes:
    if text.startswith("data:"):
        # A data URL (`data:image/png;base64,...`): the payload follows the first comma.
        text = text.partition(",")[2]
    try:
        encoded = text.encode("ascii")
        try:
            return binascii.a2b_base64(encoded, strict_mode=True)
        except binascii.Error:
            # Line breaks are common in wrapped base64; any other stray character is an error.
            # Stripped only on this second try: scanning every payload for them costs as much
            # as decoding it.
            return binascii.a2b_base64(b"".join(encoded.split()), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Unprocessable(f"{name} is not valid base64") from None
