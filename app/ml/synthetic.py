"""Synthetic coloured shapes: a labelled image set that a tiny CLIP learns in seconds.

Used by the demo and the tests. Each class is a colour and a shape ("red circle"); every image
has a random position, size and a noisy background, so the model has to learn the concept.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
# Every colour with every shape: the 18 classes tiny-clip-shapes is pretrained on.
SHAPE_CLASSES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
DEFAULT_CLASSES = ("red circle", "green square", "blue triangle", "yellow circle")


@dataclass(frozen=True)
class SyntheticImage:
    label: str
    image: Image.Image


def draw_shape(label: str, rng: random.Random, size: int = 64) -> Image.Image:
    colour_name, shape = label.split(" ", 1)
    background = tuple(rng.randint(0, 90) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(12):  # speckle noise, so a flat background is not a shortcut
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    extent = rng.randint(size // 3, size // 2 + 8)
    left = rng.randint(0, size - extent)
    top = rng.randint(0, size - extent)
    box = (left, top, left + extent, top + extent)
    colour = COLOURS[colour_name]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left + extent // 2, top), (left, top + extent), box[2:]], fill=colour)
    return image


def make_images(
    classes: tuple[str, ...] = DEFAULT_CLASSES, per_class: int = 50, seed: int = 0
) -> list[SyntheticImage]:
    rng = random.Random(seed)
    return [
        SyntheticImage(label, draw_shape(label, rng)) for label in classes for _ in range(per_class)
    ]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def classification_zip(images: list[SyntheticImage]) -> bytes:
    """A zip in the class-folder layout: `red circle/00001.png`, ..."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, item in enumerate(images):
            archive.writestr(f"{item.label}/{index:05d}.png", png_bytes(item.image))
    return buffer.getvalue()


def shapes_classification_zip(*, per_class: int, seed: int) -> bytes:
    """All 18 colour-and-shape classes in the class-folder layout; a held-out set is a new seed."""
    return classification_zip(make_images(SHAPE_CLASSES, per_class, seed))


def captions_zip(images: list[SyntheticImage]) -> bytes:
    """A zip with `metadata.jsonl` captions: `{"file_name": ..., "text": "a red circle"}`."""
    buffer = io.BytesIO()
    lines = []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, item in enumerate(images):
            name = f"images/{index:05d}.png"
            archive.writestr(name, png_bytes(item.image))
            lines.append(json.dumps({"file_name": name, "text": f"a {item.label}"}))
        archive.writestr("metadata.jsonl", "\n".join(lines) + "\n")
    return buffer.getvalue()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A picture with a photo's statistics: smooth light, soft-edged objects, fine sensor noise.

    Flat synthetic shapes resize almost losslessly; this has the gradients, edges and texture
    that make resampling choices visible, for preprocessing tests and benchmarks.
    """
    rng = np.random.default_rng(seed)
    # Lighting and colour: a coarse random grid blown up smoothly over the whole frame.
    coarse = rng.integers(30, 226, size=(4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        left, top = int(rng.integers(0, width)), int(rng.integers(0, height))
        extent = int(rng.integers(min(width, height) // 10, min(width, height) // 2))
        box = (left, top, left + extent, top + int(extent * rng.uniform(0.5, 1.5)))
        colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=1.5))  # a lens, not a vector renderer
    noise = rng.normal(0.0, 6.0, size=(height, width, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)
