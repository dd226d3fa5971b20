"""Synthetic digits: a second labelled image set, for fine-tuning a model pretrained on shapes.

Each class is a digit named as a word ("seven"), so that it reads naturally in any prompt
template ("a photo of a seven."). Every image draws the digit in Pillow's built-in font at a
random size, weight, position and small rotation, in a random bright colour on a random dark,
speckled background: colour says nothing about the class, only the glyph's form does.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFont

from app.ml.synthetic import SyntheticImage, classification_zip

DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_ROTATION_DEGREES = 10
FONT_SIZES = (0.6, 0.9)  # the font's size as a share of the image's side
# How far the glyph's centre may stray from the image's centre, as a share of the side. Small on
# purpose: tiny-clip's two-layer ViT is slow to learn digits placed anywhere. Fine-tuned on 2,000
# images for ten epochs (bench/methods.py) it reached 0.35 held-out accuracy on digits placed
# anywhere and turned up to 20 degrees, and 0.65 on these.
MAX_OFFSET = 1 / 12
# The digit is brighter than the background by at least this much in mean channel value (0-255).
MIN_CONTRAST = 90

Colour = tuple[int, int, int]


def random_colours(rng: random.Random) -> tuple[Colour, Colour]:
    """A bright digit colour on a dark background, as shapes have; neither depends on the class."""
    background = (rng.randint(0, 90), rng.randint(0, 90), rng.randint(0, 90))
    while True:
        digit = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if (sum(digit) - sum(background)) / 3 >= MIN_CONTRAST:
            return digit, background


def digit_of(label: str) -> str:
    """The character a class draws: "seven" is "7"."""
    return str(DIGIT_CLASSES.index(label))


def glyph_mask(digit: str, rng: random.Random, size: int) -> Image.Image:
    """The digit as a greyscale mask cropped to its ink, at a random size, weight and angle."""
    font_size = rng.randint(round(size * FONT_SIZES[0]), round(size * FONT_SIZES[1]))
    font = ImageFont.load_default(size=font_size)
    stroke = rng.randint(1, max(1, size // 20))
    left, top, right, bottom = (int(edge) for edge in font.getbbox(digit, stroke_width=stroke))
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text(
        (-left, -top), digit, fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    angle = rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)
    rotated = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return rotated.crop(rotated.getbbox())


def draw_digit(label: str, rng: random.Random, size: int = 64) -> Image.Image:
    digit_colour, background = random_colours(rng)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(24):  # speckle noise, so a flat background is not a shortcut
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=(rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    mask = glyph_mask(digit_of(label), rng, size)
    offset = round(size * MAX_OFFSET)
    left = (size - mask.width) // 2 + rng.randint(-offset, offset)
    top = (size - mask.height) // 2 + rng.randint(-offset, offset)
    # Clamped, so the whole glyph is always in the picture.
    left = min(max(left, 0), max(size - mask.width, 0))
    top = min(max(top, 0), max(size - mask.height, 0))
    image.paste(digit_colour, (left, top), mask)
    return image


def make_digit_images(per_class: int = 50, seed: int = 0) -> list[SyntheticImage]:
    rng = random.Random(seed)
    return [
        SyntheticImage(label, draw_digit(label, rng))
        for label in DIGIT_CLASSES
        for _ in range(per_class)
    ]


def digits_classification_zip(*, per_class: int, seed: int) -> bytes:
    """All ten digits in the class-folder layout (`seven/00071.png`); held out: a new seed."""
    return classification_zip(make_digit_images(per_class, seed))
