"""`GET /models/{id}/download`: a model's folder as a zip, streamed, with a model card.

The zip is written as it is sent (stored, not compressed: safetensors weights do not shrink),
so a 600 MB model costs neither 600 MB of memory nor of temporary disk.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.ml.model_metadata import METADATA_NAME

CARD_NAME = "README.md"
CHUNK_BYTES = 1024 * 1024


class _Sink(io.RawIOBase):
    """An unseekable stream the zip writes into; what it wrote is taken out between files."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        taken = b"".join(self._parts)
        self._parts.clear()
        return taken


def folder_files(folder: Path) -> list[Path]:
    """Every file under the folder, in a stable order; the model card is written afresh."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.relative_to(folder).as_posix() != CARD_NAME
    )


def zip_stream(folder: Path, files: list[Path], card: str) -> Iterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(CARD_NAME, card)
        yield sink.take()
        for path in files:
            name = path.relative_to(folder).as_posix()
            with archive.open(name, "w", force_zip64=True) as entry, path.open("rb") as source:
                while chunk := source.read(CHUNK_BYTES):
                    entry.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def model_card(
    *,
    model: dict[str, Any],
    dataset: dict[str, Any] | None,
    hyperparameters: dict[str, Any],
    folder: Path,
) -> str:
    """A README for the exported folder: what it is, what it was trained on and how well."""
    metadata = json.loads((folder / METADATA_NAME).read_text())
    head = ", and `head.safetensors` the trained class head" if metadata.get("head_file") else ""
    lines = [
        f"# {model['name']}",
        "",
        f"A CLIP model fine-tuned with clipft: `{metadata.get('method') or 'full'}` on top of "
        f"`{model['base_model']}`. It loads with "
        "`transformers.CLIPModel.from_pretrained(<this folder>)`; `clipft.json` holds its labels "
        f"and prompt templates{head}.",
        "",
        "| | |",
        "|---|---|",
        f"| model id | `{model['id']}` |",
        f"| kind | {model['kind']} |",
        f"| base model | `{model['base_model']}` |",
        f"| method | {metadata.get('method') or 'full'} |",
    ]
    if dataset is not None:
        lines.append(
            f"| dataset | {dataset['name']} (`{dataset['id']}`, {dataset['num_train']} train / "
            f"{dataset['num_val']} val images) |"
        )
    if model["labels"]:
        lines.append(f"| labels | {', '.join(model['labels'])} |")
    if metadata.get("temperature"):
        lines.append(
            f"| temperature | {metadata['temperature']:.4g}: divide the class logits by it before "
            "the softmax for calibrated probabilities (fitted on val) |"
        )
    if metadata.get("min_confidence") is not None:
        lines.append(
            f"| min_confidence | {metadata['min_confidence']:.4g}: below it, answer no label "
            "(chosen on val for the job's target precision) |"
        )
    lines += ["", "## Metrics (validation split)", "", "| metric | value |", "|---|---|"]
    for name, value in sorted(model["metrics"].items()):
        if isinstance(value, int | float):
            lines.append(f"| {name} | {value:.4g} |")
    lines += [
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(hyperparameters, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
