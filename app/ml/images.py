"""Decode untrusted image bytes once, with limits, into an upright RGB picture."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# Grey images deeper than 8 bits, which Pillow's `convert("RGB")` clips to 0-255 instead of
# scaling (a 16-bit microscope slide comes out nearly all white, a 0-1 float TIFF all black).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
INTEGER_MODE, FLOAT_MODE = "I", "F"
SIXTEEN_BIT_MAX = 65535


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
            return to_rgb(upright)
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


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; a deeper grey image is scaled from its own range, never clipped."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in (INTEGER_MODE, FLOAT_MODE):
        return Image.fromarray(grey_to_eight_bits(image)).convert("RGB")
    return image.convert("RGB")


def grey_to_eight_bits(image: Image.Image) -> np.ndarray:
    """16-bit grey scaled by 255/65535; 32-bit integers read as 16-bit when they fit in
    0..65535 (where Pillow keeps 16-bit data as `I`); floats scaled by 255 when within 0..1.

    Other values are refused (`ImageDecodeError`): stretching each image by its own minimum
    and maximum would make the same intensity two different greys in two images.
    """
    values = np.asarray(image)
    if image.mode == FLOAT_MODE:
        if not np.isfinite(values).all():
            raise ImageDecodeError("float image (mode F) with NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ImageDecodeError(
                f"float image (mode F) with values {low:g}..{high:g}: only 0..1 is read; "
                "save it as 8 or 16 bits"
            )
        return np.rint(values * 255).astype(np.uint8)
    if image.mode == INTEGER_MODE:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > SIXTEEN_BIT_MAX:
            raise ImageDecodeError(
                f"32-bit integer image (mode I) with values {low}..{high}: only "
                f"0..{SIXTEEN_BIT_MAX} is read; save it as 8 or 16 bits"
            )
    # value / 257 rounded: 65535 -> 255, 32896 -> 128, 0 -> 0.
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _decode_reduced(jpeg: Image.Image, min_side: int) -> None:
    # Only scales that divide both sides: otherwise the last, partial row and column of blocks
    # shift the picture by a fraction of a pixel, which is tens of grey levels at sharp edges.
    width, height = jpeg.size
    for scale in (8, 4, 2):
        if width % scale == 0 and height % scale == 0 and min(width, height) // scale >= min_side:
            jpeg.draft("RGB", (width // scale, height // scale))
            return
