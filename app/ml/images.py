"""Decode untrusted image bytes once, with limits, into an upright RGB picture."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


class ImageDecodeError(ValueError):
    """The bytes are not an acceptable image; the message says why."""


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_bytes: int | None = None


def decode_image(
    payload: bytes, limits: ImageLimits, *, min_side: int | None = None
) -> Image.Image:
    """Open, check the format and pixel count before decoding, apply EXIF orientation, make RGB.

    With `min_side`, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (the decoder skips the
    work) as long as both sides stay at least `min_side` pixels long.
    """
    if limits.max_bytes is not None and len(payload) > limits.max_bytes:
        raise ImageDecodeError(
            f"image is {len(payload)} bytes, over the limit of {limits.max_bytes}"
        )
    if not payload:
        raise ImageDecodeError("file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its own bomb limit; our limit is checked explicitly.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(payload), formats=sorted(ALLOWED_FORMATS))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, "
                    f"over the limit of {limits.max_pixels}"
                )
            if min_side is not None and image.format == "JPEG":
                _decode_reduced(image, min_side)
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"not an image in an allowed format ({', '.join(sorted(ALLOWED_FORMATS))})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"image is too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError(f"corrupt image: {error}") from None


def _decode_reduced(jpeg: Image.Image, min_side: int) -> None:
    # Only scales that divide both sides: otherwise the last, partial row and column of blocks
    # shift the picture by a fraction of a pixel, which is tens of grey levels at sharp edges.
    width, height = jpeg.size
    for scale in (8, 4, 2):
        if width % scale == 0 and height % scale == 0 and min(width, height) // scale >= min_side:
            jpeg.draft("RGB", (width // scale, height // scale))
            return
