from __future__ import annotations

import io
import random
import zipfile
from collections import Counter
from collections.abc import Callable

import pytest
from PIL import Image

from app.ml.synthetic import SHAPE_CLASSES, png_bytes, shapes_classification_zip
from app.ml.synthetic_digits import (
    DIGIT_CLASSES,
    digit_of,
    digits_classification_zip,
    draw_digit,
    make_digit_images,
)


def test_each_class_names_its_digit_in_words() -> None:
    assert [digit_of(label) for label in DIGIT_CLASSES] == list("0123456789")
    assert DIGIT_CLASSES[7] == "seven"


def test_digit_images_are_the_same_for_a_seed_and_new_for_another() -> None:
    first = make_digit_images(per_class=2, seed=3)
    again = make_digit_images(per_class=2, seed=3)
    other = make_digit_images(per_class=2, seed=4)
    assert [item.label for item in first] == [label for label in DIGIT_CLASSES for _ in range(2)]
    assert [png_bytes(item.image) for item in first] == [png_bytes(item.image) for item in again]
    assert all(png_bytes(a.image) != png_bytes(b.image) for a, b in zip(first, other, strict=True))


def two_commonest_colours(image: Image.Image) -> list[tuple[int, int, int]]:
    """The background's colour, then the digit's (the glyph's inside is pure digit colour)."""
    counts = image.getcolors(maxcolors=image.width * image.height) or []
    return [colour for _, colour in sorted(counts, reverse=True)[:2]]


@pytest.mark.parametrize("seed", range(5))
def test_colours_do_not_depend_on_the_digit(seed: int) -> None:
    colours = {
        label: two_commonest_colours(draw_digit(label, random.Random(seed)))
        for label in DIGIT_CLASSES
    }
    assert len({tuple(pair) for pair in colours.values()}) == 1


@pytest.mark.parametrize(
    ("make_zip", "classes"),
    [(digits_classification_zip, DIGIT_CLASSES), (shapes_classification_zip, SHAPE_CLASSES)],
)
def test_classification_zips_hold_every_class_in_its_own_folder(
    make_zip: Callable[..., bytes], classes: tuple[str, ...]
) -> None:
    archive = zipfile.ZipFile(io.BytesIO(make_zip(per_class=2, seed=5)))
    folders = Counter(name.split("/")[0] for name in archive.namelist())
    assert folders == dict.fromkeys(classes, 2)
