"""Write a ready dataset folder (images + manifest) straight from synthetic images, no API."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from app.ml.manifest import MANIFEST_NAME, Manifest, ManifestItem
from app.ml.synthetic import DEFAULT_CLASSES, SyntheticImage, make_images


def write_synthetic_folder(
    folder: Path,
    *,
    kind: str = "classification",
    classes: tuple[str, ...] = DEFAULT_CLASSES,
    per_class: int = 40,
    val_every: int = 4,
    seed: int = 0,
) -> Manifest:
    """Synthetic shapes; every `val_every`-th image goes to val; captions are `a <label>`."""
    images = make_images(classes, per_class=per_class, seed=seed)
    return write_image_folder(folder, images, kind=kind, val_every=val_every)


def write_image_folder(
    folder: Path,
    images: list[SyntheticImage],
    *,
    kind: str = "classification",
    val_every: int = 4,
) -> Manifest:
    """Any labelled synthetic images as a ready dataset folder."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items = []
    for index, sample in enumerate(images):
        file = f"images/{index:05d}.png"
        sample.image.save(folder / file)
        split: Literal["train", "val"] = "val" if index % val_every == 0 else "train"
        if kind == "classification":
            items.append(ManifestItem(file=file, source=file, split=split, label=sample.label))
        else:
            items.append(
                ManifestItem(file=file, source=file, split=split, text=f"a {sample.label}")
            )
    classes = sorted({sample.label for sample in images})
    manifest = Manifest(
        kind=kind,  # type: ignore[arg-type]
        classes=classes if kind == "classification" else [],
        items=items,
    )
    (folder / MANIFEST_NAME).write_text(json.dumps(asdict(manifest)))
    return manifest
