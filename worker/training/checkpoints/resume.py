"""Where a run resumes: the newest checkpoint that verifies, from this attempt's folder or an
earlier attempt's, adopted into this attempt's folder.

Each attempt writes and prunes only its own folder, so an attempt that wakes up after it was
replaced cannot delete what the new one relies on. A checkpoint from an earlier attempt is
hard-linked into the new attempt's folder (its files never change once written), together with
the best epoch it names, so everything the new attempt refers to is its own.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from app.core.storage import atomic_dir
from app.ml.model_metadata import METADATA_NAME, read_metadata
from worker.training.checkpoints.folder import (
    OPTIMIZER_GROUPS_NAME,
    OPTIMIZER_TENSORS_NAME,
    TRAINER_STATE_NAME,
    TrainerState,
    read_trainer_state,
)
from worker.training.evaluate import PRIMARY_METRIC

REQUIRED_JSON = (TRAINER_STATE_NAME, METADATA_NAME, "config.json")


@dataclass
class ResumePoint:
    """The checkpoint to resume from (None: start afresh) and what was wrong with newer ones."""

    folder: Path | None
    problems: list[str] = field(default_factory=list)


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, or None when every file it needs reads back.

    A complete run's checkpoint has no optimizer state (nothing is left to train); any other
    needs its own.
    """
    documents: dict[str, Any] = {}
    for name in REQUIRED_JSON:
        documents[name], problem = _read_json(folder / name)
        if problem is not None:
            return problem
    try:
        state = TrainerState(**documents[TRAINER_STATE_NAME])
    except TypeError as error:
        return f"{TRAINER_STATE_NAME} is not a trainer state ({error})"
    tensor_files = set(_weight_files(folder))
    if not state.complete:
        _, problem = _read_json(folder / OPTIMIZER_GROUPS_NAME)
        if problem is not None:
            return problem
        tensor_files.add(OPTIMIZER_TENSORS_NAME)
    for tensors in sorted(tensor_files):
        try:
            # Reads the header and the offsets, which a truncated file no longer matches.
            with safe_open(str(folder / tensors), framework="pt") as opened:
                keys = list(opened.keys())
                if keys:
                    opened.get_slice(keys[-1])
            _check_size(folder / tensors)
        except Exception as error:
            return f"{tensors} does not read back ({type(error).__name__}: {error})"
    return None


def _read_json(path: Path) -> tuple[Any, str | None]:
    """The file's JSON, or why it does not read back."""
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as error:
        return None, f"{path.name} does not read back ({type(error).__name__})"


def _weight_files(folder: Path) -> list[str]:
    names = [path.name for path in folder.glob("*.safetensors")]
    names += [f"adapter/{path.name}" for path in (folder / "adapter").glob("*.safetensors")]
    return names


def _check_size(path: Path) -> None:
    """A safetensors file is its 8-byte header length, the header, then exactly the data."""
    with path.open("rb") as handle:
        header_length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_length))
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_length + max(ends, default=0)
    if path.stat().st_size != expected:
        raise ValueError(f"{path.stat().st_size} bytes where the header promises {expected}")


def find_resume_point(out_dir: Path, earlier_dirs: list[Path]) -> ResumePoint:
    """The newest verified checkpoint across this attempt's folder and earlier ones."""
    candidates = [
        folder
        for directory in [out_dir, *earlier_dirs]
        for folder in directory.glob("epoch-*")
        if (folder / TRAINER_STATE_NAME).is_file()
    ]
    candidates.sort(key=lambda folder: int(folder.name.split("-")[1]), reverse=True)
    problems: list[str] = []
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            return ResumePoint(folder, problems)
        problems.append(f"checkpoint {_describe(folder, out_dir)} is unusable: {problem}")
    return ResumePoint(None, problems)


def _describe(folder: Path, out_dir: Path) -> str:
    return folder.name if folder.parent == out_dir else f"{folder.parent.name}/{folder.name}"


def adopt(folder: Path, out_dir: Path) -> Path:
    """The checkpoint, and the best epoch its state names, as folders of `out_dir`."""
    if folder.parent == out_dir:
        return folder
    out_dir.mkdir(parents=True, exist_ok=True)
    adopted = link_copy(folder, out_dir / folder.name)
    state = read_trainer_state(adopted)
    best = state.best_checkpoint
    if best and best != folder.name:
        try:
            link_copy(folder.parent / best, out_dir / best)
        except OSError:
            # The earlier attempt's best is gone (pruned while we copied): the resume point
            # becomes the best, with the metric its epoch reached.
            rewrite_best(adopted, state)
    return adopted


def link_copy(source: Path, target: Path) -> Path:
    """Hard links where the filesystem allows, copies elsewhere; written under a staging name."""
    with atomic_dir(target) as staging:
        shutil.copytree(source, staging, copy_function=_link_or_copy)
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def rewrite_best(folder: Path, state: TrainerState) -> None:
    metric = PRIMARY_METRIC[read_metadata(folder).kind]
    state.best_checkpoint = folder.name
    state.best_metric = state.entry_for(folder.name).get(metric)
    # A hard link shares its bytes with the earlier attempt's file: replace it, never edit it.
    path = folder / TRAINER_STATE_NAME
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(asdict(state), indent=2))
    os.replace(staging, path)
