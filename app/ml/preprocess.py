"""Turn PIL images into CLIP pixel tensors, matching the model's own image processor settings.

Serving splits the work in two: `resize_and_crop` (per image, uint8, in any thread) and
`normalize` (one batched op on the model's device). `eval_transform` chains both for one image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf
from transformers import CLIPImageProcessor

ImageTransform = Callable[[Image.Image], torch.Tensor]

# Resized images larger than this many crops (aspect ratios past 16:1) take the crop-only path.
MAX_RESIZED_AREA = 16


def input_size(image_processor: CLIPImageProcessor) -> tuple[int, int]:
    crop = image_processor.crop_size or {}
    if "height" in crop and "width" in crop:
        return int(crop["height"]), int(crop["width"])
    size = image_processor.size or {}
    edge = int(size.get("shortest_edge", 224))
    return edge, edge


@dataclass(frozen=True)
class PixelSpec:
    """What a CLIP's image processor makes of a picture: the resize, the crop, the statistics."""

    # The short side is resized to this (aspect ratio kept), or, when None, the whole image is
    # resized to `resize_to` exactly.
    shortest_edge: int | None
    resize_to: tuple[int, int]
    crop: tuple[int, int]  # height, width: the model's input size
    mean: tuple[float, ...]
    std: tuple[float, ...]


def pixel_spec(image_processor: CLIPImageProcessor) -> PixelSpec:
    """Read the resize, crop and normalisation out of a `CLIPImageProcessor`."""
    crop = input_size(image_processor)
    size = image_processor.size or {}
    height, width = size.get("height"), size.get("width")
    shortest_edge = None if height and width else int(size.get("shortest_edge") or min(crop))
    resize_to = (int(height), int(width)) if height and width else crop
    if shortest_edge is not None and shortest_edge < max(crop):
        # The processor would pad such images; no CLIP checkpoint does this, so refuse it loudly.
        raise ValueError(f"shortest_edge {shortest_edge} is smaller than the crop {crop}")
    return PixelSpec(
        shortest_edge=shortest_edge,
        resize_to=resize_to,
        crop=crop,
        mean=tuple(float(value) for value in image_processor.image_mean),
        std=tuple(float(value) for value in image_processor.image_std),
    )


def resized_size(spec: PixelSpec, width: int, height: int) -> tuple[int, int]:
    """(height, width) after the resize, rounded the way `CLIPImageProcessor` rounds."""
    if spec.shortest_edge is None:
        return spec.resize_to
    edge = spec.shortest_edge
    if width <= height:
        return int(edge * height / width), edge
    return edge, int(edge * width / height)


def resize_and_crop(image: Image.Image, spec: PixelSpec) -> torch.Tensor:
    """Bicubic resize and centre crop to the model's input size: a 3 x H x W uint8 tensor.

    The same torchvision uint8 kernel and crop offsets as `CLIPImageProcessor`, so the pixels
    match it exactly; uint8 is a quarter of the memory of float pixels while requests queue.
    """
    image = image.convert("RGB")
    height, width = resized_size(spec, image.width, image.height)
    crop_height, crop_width = spec.crop
    # int(x / 2.0) like the processor; torchvision's center_crop rounds, one pixel off.
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    if height * width > MAX_RESIZED_AREA * crop_height * crop_width:
        return _resize_crop_only(image, (height, width), (top, left), spec.crop)
    resized = tvf.resize(
        tvf.pil_to_tensor(image),
        [height, width],
        interpolation=v2.InterpolationMode.BICUBIC,
        antialias=True,
    )
    return resized[:, top : top + crop_height, left : left + crop_width].contiguous()


def _resize_crop_only(
    image: Image.Image,
    resized: tuple[int, int],
    offset: tuple[int, int],
    crop: tuple[int, int],
) -> torch.Tensor:
    # Pillow resizes just the part of the source under the crop: a 1 x 50000 banner would
    # otherwise become 224 x 11 million pixels first. Its bicubic is within a grey level of
    # torchvision's.
    scale_y, scale_x = image.height / resized[0], image.width / resized[1]
    (top, left), (crop_height, crop_width) = offset, crop
    box = (
        left * scale_x,
        top * scale_y,
        (left + crop_width) * scale_x,
        (top + crop_height) * scale_y,
    )
    cropped = image.resize((crop_width, crop_height), Image.Resampling.BICUBIC, box=box)
    return tvf.pil_to_tensor(cropped)


def normalize(pixels: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """Pixels in 0-255 (N x 3 x H x W, uint8 or float, any device) to the model's float32 inputs."""
    mean, std = _statistics_on(pixels.device, spec.mean, spec.std)
    return (pixels.float() - mean) / std


@lru_cache(maxsize=16)
def _statistics_on(
    device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh tensor per call would be a host-to-device copy, and on a GPU
    # a wait for the device, in every training step and every serving pass.
    shape = (1, len(mean), 1, 1)
    return (
        torch.tensor(mean, device=device).view(shape) * 255,
        torch.tensor(std, device=device).view(shape) * 255,
    )


def eval_transform(image_processor: CLIPImageProcessor) -> ImageTransform:
    """Resize the short side, centre-crop, normalise: the processor, one image at a time."""
    spec = pixel_spec(image_processor)
    return lambda image: normalize(resize_and_crop(image, spec).unsqueeze(0), spec)[0]
