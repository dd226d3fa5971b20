"""A request's images become the model's uint8 input in a shared pool, within tolerance of CLIP's
own image processor, and a bad image is named by its index."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from app.inference.pixels import DRAFT_MARGIN, BadImage, PixelPool, image_pixels
from app.ml.images import ImageLimits, decode_image
from app.ml.preprocess import normalize, pixel_spec
from app.ml.synthetic import photo_like

PROCESSOR = CLIPImageProcessor()  # ViT-B/32's: short side to 224, centre crop 224
SPEC = pixel_spec(PROCESSOR)
LIMITS = ImageLimits(max_pixels=50_000_000)
TWO_GREY_LEVELS = 2 / 255 / min(SPEC.std)


def encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=92)
    return buffer.getvalue()


def max_difference_from_processor(payload: bytes) -> float:
    served = normalize(image_pixels(payload, limits=LIMITS, spec=SPEC).unsqueeze(0), SPEC)[0]
    full_decode = decode_image(payload, LIMITS)
    expected = PROCESSOR(images=full_decode, return_tensors="pt")["pixel_values"][0]
    return float((served - expected).abs().max())


@pytest.fixture(scope="module")
def pool() -> Iterator[PixelPool]:
    pixel_pool = PixelPool(threads=2)
    yield pixel_pool
    pixel_pool.shutdown()


@pytest.mark.parametrize(
    ("size", "image_format"),
    [((512, 384), "JPEG"), ((384, 512), "PNG"), ((301, 700), "WEBP"), ((1000, 999), "JPEG")],
)
def test_small_images_match_the_processor_exactly(size: tuple[int, int], image_format: str) -> None:
    payload = encode(photo_like(*size, seed=size[0]), image_format)

    # Measured 0 to 5e-7: the same uint8 resize kernel, crop offsets and normalisation.
    assert max_difference_from_processor(payload) < 1e-5


@pytest.mark.parametrize("size", [(4032, 3024), (2688, 3584)])
def test_large_jpegs_decode_reduced_within_two_grey_levels(size: tuple[int, int]) -> None:
    payload = encode(photo_like(*size, seed=size[1]), "JPEG")
    reduced = decode_image(payload, LIMITS, min_side=DRAFT_MARGIN * max(SPEC.crop))
    assert reduced.size == (size[0] // 2, size[1] // 2)  # the decoder really did less work

    # Measured 1.0 to 1.95 grey levels (0.015 to 0.029); at most two grey levels allowed.
    assert max_difference_from_processor(payload) <= TWO_GREY_LEVELS + 1e-5


def test_a_jpeg_whose_sides_do_not_divide_is_decoded_in_full() -> None:
    payload = encode(photo_like(2691, 3001, seed=3), "JPEG")

    assert decode_image(payload, LIMITS, min_side=DRAFT_MARGIN * 224).size == (2691, 3001)


def test_a_batch_is_uint8_in_request_order(pool: PixelPool) -> None:
    payloads = [encode(photo_like(320 + 40 * seed, 240, seed=seed), "PNG") for seed in range(5)]

    batch = pool.batch(payloads, limits=LIMITS, spec=SPEC)

    assert batch.dtype == torch.uint8
    assert batch.shape == (5, 3, 224, 224)
    for row, payload in zip(batch, payloads, strict=True):
        assert torch.equal(row, image_pixels(payload, limits=LIMITS, spec=SPEC))


def test_the_first_bad_image_is_named_by_index(pool: PixelPool) -> None:
    good = encode(photo_like(64, 48), "PNG")
    payloads = [good, good[: len(good) // 2], b"not an image", good]

    with pytest.raises(BadImage) as raised:
        pool.batch(payloads, limits=LIMITS, spec=SPEC)

    assert raised.value.index == 1
    assert raised.value.reason.startswith("corrupt image")
    # The pool is still usable afterwards.
    assert pool.batch([good], limits=LIMITS, spec=SPEC).shape == (1, 3, 224, 224)
