"""Batch transforms on the training device: from prepared uint8 squares to normalised pixels.

Training takes a random resized crop (and optionally a flip) of every sample in one batched
`roi_align`; evaluation resizes the whole square to the input size, which is what CLIP's own
processor does (short side to the input size, centre crop). Each sample's randomness comes from
the run's seed, the epoch and the sample's index alone, so a run repeats exactly whatever the
batch order, thread timing or device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from app.ml.preprocess import PixelSpec, normalize

# Random resized crop: the share of the stored square kept, per `augment` setting (`light`
# keeps most of the image, `standard` crops wider), and the aspect ratios allowed.
CROP_SCALES: dict[str, tuple[float, float]] = {"light": (0.8, 1.0), "standard": (0.5, 1.0)}
CROP_RATIO = (3 / 4, 4 / 3)
_UNIFORMS_PER_SAMPLE = 5


def eval_pixels(squares: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """The whole square resized to the input size (bicubic, antialiased), then normalised."""
    size = spec.crop
    pixels = squares.float()
    if pixels.shape[-2:] != size:
        pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True)
        # Bicubic overshoots; the processor's uint8 round trip clamps the same way.
        pixels = pixels.clamp_(0.0, 255.0)
    return normalize(pixels, spec)


def train_pixels(
    squares: torch.Tensor,
    spec: PixelSpec,
    uniforms: torch.Tensor,
    *,
    scale: tuple[float, float],
    flip: bool,
) -> torch.Tensor:
    """A random resized crop of each sample, optionally flipped, normalised; one batched op."""
    side = squares.shape[-1]
    boxes = crop_boxes(uniforms, side, scale)
    pixels = roi_align(
        squares.float(),
        torch.cat([torch.arange(len(boxes), device=boxes.device)[:, None].float(), boxes], 1),
        output_size=spec.crop,
        spatial_scale=1.0,
        # One bilinear sample per output pixel: crops are at most 8/7 of the output's side, too
        # little shrinking to alias, and four samples cost three times as much (measured).
        sampling_ratio=1,
        aligned=True,
    )
    if flip:
        flipped = uniforms[:, 4] < 0.5
        pixels = torch.where(flipped[:, None, None, None], pixels.flip(-1), pixels)
    return normalize(pixels, spec)


def crop_boxes(
    uniforms: torch.Tensor, side: int, scale_range: tuple[float, float] = CROP_SCALES["light"]
) -> torch.Tensor:
    """`(x1, y1, x2, y2)` per sample from its uniforms: a scale, a log aspect ratio, a position."""
    area = side * side
    scale = scale_range[0] + uniforms[:, 0] * (scale_range[1] - scale_range[0])
    low, high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(low + uniforms[:, 1] * (high - low))
    width = torch.sqrt(scale * area * ratio).clamp(1.0, side)
    height = torch.sqrt(scale * area / ratio).clamp(1.0, side)
    left = uniforms[:, 2] * (side - width)
    top = uniforms[:, 3] * (side - height)
    return torch.stack([left, top, left + width, top + height], dim=1)


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), `(len(indices), 5)`, a pure function of (seed, epoch, sample index).

    A counter-based hash (splitmix64's finaliser) rather than a stateful generator: the same
    sample in the same epoch always gets the same crop, whichever batch or thread draws it.
    """
    keys = _mix(np.full(len(indices), seed, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    keys = _mix(keys ^ np.uint64(epoch))
    keys = _mix(keys ^ indices.astype(np.uint64))
    streams = np.arange(_UNIFORMS_PER_SAMPLE, dtype=np.uint64)
    bits = _mix(keys[:, None] + streams[None, :] * np.uint64(0xD1B54A32D192ED03))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _mix(values: np.ndarray) -> np.ndarray:
    # uint64 arrays wrap on overflow, which is what the hash wants.
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))
