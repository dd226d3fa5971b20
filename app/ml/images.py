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


def decode_image(payload: bytes, limits: ImageLimits) -> Image.Image:
    """Open, check the format and pixel count before decoding, apply EXIF orientation, make RGB."""
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
