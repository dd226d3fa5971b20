"""Turn PIL images into CLIP pixel tensors, matching the model's own image processor settings."""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2
from transformers import CLIPImageProcessor

ImageTransform = Callable[[Image.Image], torch.Tensor]


def input_size(image_processor: CLIPImageProcessor) -> tuple[int, int]:
    crop = image_processor.crop_size or {}
    if "height" in crop and "width" in crop:
        return int(crop["height"]), int(crop["width"])
    size = image_processor.size or {}
    edge = int(size.get("shortest_edge", 224))
    return edge, edge


def eval_transform(image_processor: CLIPImageProcessor) -> ImageTransform:
    """Resize the short side, centre-crop, normalise: what the processor does, on torchvision."""
    height, width = input_size(image_processor)
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(
                min(height, width), interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            ),
            v2.CenterCrop((height, width)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=image_processor.image_mean, std=image_processor.image_std),
        ]
    )


def train_transform(image_processor: CLIPImageProcessor) -> ImageTransform:
    """A light augmentation: random resized crop (most of the image kept) and horizontal flip."""
    height, width = input_size(image_processor)
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(
                (height, width),
                scale=(0.8, 1.0),
                interpolation=v2.InterpolationMode.BICUBIC,
                antialias=True,
            ),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=image_processor.image_mean, std=image_processor.image_std),
        ]
    )
