"""A model's ONNX export, built once per machine and kept next to the data dir's models.

The zip is keyed by the model's `clipft.json` (and the export's own version), so a model whose
metadata changed is exported again. One process builds it under an exclusive lock file; the
others that asked meanwhile wait and then read the finished file (written under a temporary
name and renamed into place).
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import torch

from app.core.storage import exports_dir
from app.inference.cache import load_cached_model
from app.ml.model_metadata import METADATA_NAME
from app.models.onnx_export import export_onnx

# Bumped whenever the zip's contents would change for the same model.
ONNX_EXPORT_VERSION = 1


def onnx_export(*, data_dir: Path, model_id: str, folder: Path) -> Path:
    """The path of the model's ONNX zip, exported first if this machine has none yet.
    `ModelUnavailable` if the model folder does not load."""
    fingerprint = hashlib.sha256((folder / METADATA_NAME).read_bytes()).hexdigest()[:16]
    target = exports_dir(data_dir, model_id) / f"onnx-v{ONNX_EXPORT_VERSION}-{fingerprint}.zip"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            model = load_cached_model(model_id, folder, torch.device("cpu"), precision="fp32")
            export_onnx(model, folder, target)
    return target
