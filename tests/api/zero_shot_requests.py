"""Labelled shape images, base64-encoded, for zero-shot requests."""

from __future__ import annotations

import base64

from app.ml.synthetic import make_images, png_bytes

LABELS = ["red circle", "green square", "blue triangle", "yellow circle"]


def encoded(image_count: int, seed: int) -> tuple[list[str], list[str]]:
    samples = make_images(tuple(LABELS), per_class=image_count, seed=seed)
    return [sample.label for sample in samples], [
        base64.b64encode(png_bytes(sample.image)).decode() for sample in samples
    ]
