"""Serving's uint8 resize-and-crop plus batched normalise gives the model's processor's pixels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor

from app.ml.preprocess import eval_transform, normalize, pixel_spec, resize_and_crop
from app.ml.synthetic import photo_like

# Width x height: landscape, portrait, odd sizes, nearly square, one side already at the crop.
SIZES = [(512, 384), (384, 512), (333, 501), (700, 300), (225, 224), (224, 900)]
PROCESSORS = {
    "openai": CLIPImageProcessor(),
    "resize 256, crop 224": CLIPImageProcessor(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
    ),
    "square resize": CLIPImageProcessor(
        size={"height": 240, "width": 240}, crop_size={"height": 224, "width": 224}
    ),
    "tiny-clip": CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ),
}


def reference(processor: CLIPImageProcessor, image: Image.Image) -> torch.Tensor:
    pixel_values: torch.Tensor = processor(images=image, return_tensors="pt")["pixel_values"]
    return pixel_values[0]


@pytest.mark.parametrize("processor_name", sorted(PROCESSORS))
@pytest.mark.parametrize("size", SIZES)
def test_uint8_path_matches_the_image_processor(processor_name: str, size: tuple[int, int]) -> None:
    processor = PROCESSORS[processor_name]
    spec = pixel_spec(processor)
    image = photo_like(*size, seed=sum(size))

    pixels = resize_and_crop(image, spec)
    normalised = normalize(pixels.unsqueeze(0), spec)[0]

    assert pixels.dtype == torch.uint8
    assert pixels.shape == (3, *spec.crop)
    # The same uint8 kernel and crop offsets: equal up to float rounding (measured 0 to 5e-7).
    assert (normalised - reference(processor, image)).abs().max().item() < 1e-5


def test_a_banner_takes_the_crop_only_path_within_two_grey_levels() -> None:
    processor = PROCESSORS["openai"]
    spec = pixel_spec(processor)
    banner = photo_like(3000, 40, seed=5)  # 75:1, resized it would be 224 x 16800

    normalised = normalize(resize_and_crop(banner, spec).unsqueeze(0), spec)[0]

    # Pillow's bicubic against torchvision's: measured 1.0 to 2.0 grey levels at most.
    two_grey_levels = 2 / 255 / min(spec.std)
    assert (normalised - reference(processor, banner)).abs().max().item() <= two_grey_levels + 1e-5


def test_eval_transform_is_the_same_pipeline_one_image_at_a_time() -> None:
    processor = PROCESSORS["openai"]
    image = photo_like(640, 480, seed=1)

    transformed = eval_transform(processor)(image)

    assert transformed.shape == (3, 224, 224)
    assert transformed.dtype == torch.float32
    assert (transformed - reference(processor, image)).abs().max().item() < 1e-5


def test_a_processor_that_would_pad_is_refused() -> None:
    processor = CLIPImageProcessor(
        size={"shortest_edge": 200}, crop_size={"height": 224, "width": 224}
    )

    with pytest.raises(ValueError, match="smaller than the crop"):
        pixel_spec(processor)
