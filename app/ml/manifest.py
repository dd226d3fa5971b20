"""The dataset manifest: the file contract between dataset ingestion and training.

A ready dataset folder holds `manifest.json` and the normalised images it names (RGB PNGs under
`images/`). Classification items carry `label`; caption items carry `text`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

DatasetKind = Literal["classification", "captions"]
Split = Literal["train", "val"]
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ManifestItem:
    file: str
    source: str
    split: Split
    label: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Manifest:
    kind: DatasetKind
    classes: list[str] = field(default_factory=list)
    items: list[ManifestItem] = field(default_factory=list)

    def split(self, which: Split) -> list[ManifestItem]:
        return [item for item in self.items if item.split == which]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def read_manifest(dataset_dir: Path) -> Manifest:
    raw = json.loads((dataset_dir / MANIFEST_NAME).read_text())
    return Manifest(
        kind=raw["kind"],
        classes=list(raw["classes"]),
        items=[ManifestItem(**item) for item in raw["items"]],
    )
