"""`decode_image`: allowed formats only, limits checked before decoding, upright RGB out."""

from __future__ import annotations

import io
import random
import re

import numpy as np
import pytest
from PIL import Image

from app.ml.images import ImageDecodeError, ImageLimits, decode_image

LIMITS = ImageLimits(max_pixels=1_000_000)
NOT_ALLOWED = "not an image in an allowed format (BMP, GIF, JPEG, PNG, TIFF, WEBP)"


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def noisy(size: tuple[int, int]) -> Image.Image:
    # Noise does not compress, so a cut file really is missing pixel data.
    rng = random.Random(0)
    return Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    )


def two_halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_decode_to_rgb(image_format: str) -> None:
    decoded = decode_image(encode(Image.new("RGB", (12, 7), (10, 200, 30)), image_format), LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.size == (12, 7)


@pytest.mark.parametrize("image_format", ["PPM", "ICO", "PCX", "TGA"])
def test_formats_outside_the_allow_list_are_refused(image_format: str) -> None:
    payload = encode(Image.new("RGB", (16, 16)), image_format)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(payload, LIMITS)
    assert str(caught.value) == NOT_ALLOWED


def test_bytes_that_are_not_an_image_are_refused() -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(b"just some text, not a picture", LIMITS)
    assert str(caught.value) == NOT_ALLOWED


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(b"", LIMITS)
    assert str(caught.value) == "file is empty"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_a_truncated_image_is_reported_corrupt(image_format: str) -> None:
    payload = encode(noisy((64, 64)), image_format)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(payload[: len(payload) // 2], LIMITS)
    assert str(caught.value).startswith("corrupt image: ")


def test_a_damaged_png_is_reported_corrupt() -> None:
    payload = bytearray(encode(noisy((32, 32)), "PNG"))
    middle = len(payload) // 2
    payload[middle : middle + 16] = b"\x00" * 16
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bytes(payload), LIMITS)
    assert str(caught.value).startswith("corrupt image: ")


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    payload = encode(Image.new("RGB", (20, 20)), "PNG")
    assert decode_image(payload, ImageLimits(max_pixels=400)).size == (20, 20)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(payload, ImageLimits(max_pixels=399))
    assert str(caught.value) == "image is 20x20 = 400 pixels, over the limit of 399"


def test_the_byte_limit_is_checked() -> None:
    payload = encode(Image.new("RGB", (20, 20)), "PNG")
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(payload, ImageLimits(max_pixels=1000, max_bytes=len(payload) - 1))
    assert str(caught.value) == (
        f"image is {len(payload)} bytes, over the limit of {len(payload) - 1}"
    )


def test_pillow_bomb_guard_becomes_a_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our own limit is higher here, so Pillow's guard (warning or error) is what fires.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for size in [(12, 12), (20, 20)]:  # above the warning threshold, above the error one
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(encode(Image.new("RGB", size), "PNG"), LIMITS)
        assert str(caught.value).startswith("image is too large to decode safely: ")


@pytest.mark.parametrize(("orientation", "top_colour"), [(6, "red"), (8, "blue")])
def test_exif_orientation_is_applied(orientation: int, top_colour: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = encode(two_halves((40, 20)), "JPEG", exif=exif, quality=95)
    decoded = decode_image(payload, LIMITS)
    assert decoded.size == (20, 40)
    red, _, blue = decoded.getpixel((10, 5))
    assert (red > blue) == (top_colour == "red")


def test_orientation_3_turns_the_image_upside_down() -> None:
    exif = Image.Exif()
    exif[0x0112] = 3
    decoded = decode_image(encode(two_halves((40, 20)), "JPEG", exif=exif, quality=95), LIMITS)
    assert decoded.size == (40, 20)
    red, _, blue = decoded.getpixel((5, 10))
    assert blue > red  # the left edge was the right one


@pytest.mark.parametrize(
    ("mode", "image_format"),
    [
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("L", "PNG"),
        ("1", "PNG"),
        ("P", "GIF"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("RGBA", "WEBP"),
    ],
)
def test_every_mode_comes_out_rgb(mode: str, image_format: str) -> None:
    image = Image.new("RGB", (9, 5), (120, 60, 30)).convert(mode)
    decoded = decode_image(encode(image, image_format), LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.size == (9, 5)


def gradient(dtype: str, high: float, size: tuple[int, int] = (256, 4)) -> Image.Image:
    """A left-to-right ramp from 0 to `high`, each row alike, stored as `dtype`."""
    width, height = size
    ramp = np.linspace(0, high, width).astype(dtype)
    return Image.fromarray(np.tile(ramp, (height, 1)))


def grey_row(decoded: Image.Image) -> np.ndarray:
    pixels = np.asarray(decoded)
    assert decoded.mode == "RGB"
    # Grey in, grey out: the three channels alike.
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[0, :, 0].astype(int)


@pytest.mark.parametrize(
    ("dtype", "high", "image_format"),
    [
        ("uint16", 65535, "PNG"),  # opens as I;16
        ("<u2", 65535, "TIFF"),  # I;16
        (">u2", 65535, "TIFF"),  # I;16B
        ("int32", 65535, "TIFF"),  # I: read as 16-bit when it fits
        ("float32", 1.0, "TIFF"),  # F within 0..1
    ],
)
def test_deep_grey_images_keep_their_gradient(dtype: str, high: float, image_format: str) -> None:
    row = grey_row(decode_image(encode(gradient(dtype, high), image_format), LIMITS))
    # Scaled from the mode's range, not clipped at 255: the ramp stays a ramp from black to white.
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all()
    assert len(set(row.tolist())) >= 250
    assert abs(row[128] - 128) <= 1


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (gradient("float32", 4.0), "float image (mode F) with values 0..4: only 0..1 is read"),
        (gradient("float32", -1.0), "float image (mode F) with values -1..0"),
        (gradient("int32", 70000), "32-bit integer image (mode I) with values 0..70000"),
        (gradient("int32", -5), "32-bit integer image (mode I) with values -5..0"),
    ],
)
def test_deep_images_outside_the_range_read_are_refused(image: Image.Image, expected: str) -> None:
    with pytest.raises(ImageDecodeError, match=re.escape(expected)):
        decode_image(encode(image, "TIFF"), LIMITS)


def test_a_float_image_with_nan_is_refused() -> None:
    values = np.full((4, 4), 0.5, dtype=np.float32)
    values[1, 2] = np.nan
    with pytest.raises(ImageDecodeError, match="NaN or infinite"):
        decode_image(encode(Image.fromarray(values), "TIFF"), LIMITS)
