"""Host copies of what a checkpoint holds, taken between steps so the writing can overlap training.

A snapshot owns copies, never the live tensors: the loop goes on updating the weights in place
while a background thread writes the snapshot to disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from app.ml.base_models import LoadedClip
from app.ml.class_head import ClassHead
from app.ml.model_files import save_clip_folder
from app.ml.model_metadata import ModelMetadata


def host_copy(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached host-memory copies of `tensors`, all finished when this returns.

    Device tensors go to pinned memory with asynchronous copies and one synchronisation at the
    end, rather than a blocking copy each: for a ViT-B/32 and its AdamW state that is 1.8 GB
    at the link's speed. Torch caches pinned blocks, so later checkpoints reuse them.
    """
    copies: dict[str, torch.Tensor] = {}
    devices: set[torch.device] = set()
    for name, tensor in tensors.items():
        source = tensor.detach()
        if source.device.type == "cuda":
            target = torch.empty(source.shape, dtype=source.dtype, pin_memory=True)
            target.copy_(source, non_blocking=True)
            devices.add(source.device)
        else:
            target = source.to("cpu", copy=True).contiguous()
        copies[name] = target
    for device in devices:
        torch.cuda.synchronize(device)
    return copies


class ModelSnapshot(Protocol):
    """The model files of a checkpoint, ready to be written from any thread."""

    def write(self, folder: Path) -> None: ...


@dataclass
class ClipFolderSnapshot:
    """A plain CLIP folder (what serving loads) and the head, if the method trains one.

    `loaded` supplies the configuration, tokenizer and image processor, which training does not
    change; the weights come from `weights`, the host copy.
    """

    loaded: LoadedClip
    weights: dict[str, torch.Tensor] | None
    metadata: ModelMetadata
    head: ClassHead | None = None

    def write(self, folder: Path) -> None:
        save_clip_folder(self.loaded, self.metadata, folder, weights=self.weights)
        if self.head is not None:
            self.head.save(folder)


def head_copy(head: ClassHead | None) -> ClassHead | None:
    """A host copy of a head (a few kilobytes: one row per class)."""
    if head is None:
        return None
    return ClassHead(head.weight.detach().cpu(), head.bias.detach().cpu())
