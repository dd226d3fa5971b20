"""Register a trained model for tests: a tiny-clip folder on disk plus its database rows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import torch

from app.core import storage
from app.core.config import Settings
from app.core.db import session_scope
from app.ml.base_models import LoadedClip
from app.ml.model_files import save_clip_folder
from app.ml.model_metadata import ModelMetadata
from app.ml.tiny_clip import TINY_CLIP_NAME, build_tiny_clip
from app.orm.base import utcnow
from app.orm.tables import DEFAULT_TENANT, Dataset, Job, Model

SHAPE_LABELS = ("red circle", "green square", "blue triangle")
PROMPT_TEMPLATE = "a photo of a {}."


def write_model_folder(
    folder: Path,
    *,
    kind: str = "classification",
    labels: tuple[str, ...] = SHAPE_LABELS,
    prompt_template: str = PROMPT_TEMPLATE,
    weights_seed: int | None = None,
    shortest_edge: int | None = None,
) -> None:
    """Save a freshly built tiny-clip with its `clipft.json` metadata into `folder`.

    Every tiny-clip has the same weights; `weights_seed` draws its two projections afresh, so
    that models answer differently. `shortest_edge` resizes images to that side before the crop.
    """
    clip, tokenizer, image_processor = build_tiny_clip()
    if weights_seed is not None:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(weights_seed)
            for projection in (clip.visual_projection, clip.text_projection):
                projection.weight.normal_(std=projection.weight.std().item())
    if shortest_edge is not None:
        image_processor.size = {"shortest_edge": shortest_edge}
    metadata = ModelMetadata(
        kind=kind,
        labels=list(labels),
        prompt_template=prompt_template,
        base_model=TINY_CLIP_NAME,
    )
    save_clip_folder(LoadedClip(clip, tokenizer, image_processor), metadata, folder)


def register_model(
    *,
    settings: Settings,
    kind: str = "classification",
    labels: tuple[str, ...] | None = None,
    prompt_template: str = PROMPT_TEMPLATE,
    weights_seed: int | None = None,
    shortest_edge: int | None = None,
    name: str = "test model",
    created_at: datetime | None = None,
    write_files: bool = True,
    tenant: str = DEFAULT_TENANT,
) -> str:
    """Write a tiny-clip model folder and its dataset, succeeded job and model rows; its id."""
    if labels is None:
        labels = SHAPE_LABELS if kind == "classification" else ()
    model_id = storage.new_id()
    folder = storage.model_dir(settings.data_dir, model_id)
    if write_files:
        write_model_folder(
            folder,
            kind=kind,
            labels=labels,
            prompt_template=prompt_template,
            weights_seed=weights_seed,
            shortest_edge=shortest_edge,
        )
    with session_scope(settings.resolved_database_url) as session:
        dataset = Dataset(
            id=storage.new_id(),
            tenant=tenant,
            name=f"{name} data",
            status="ready",
            kind=kind,
            classes=list(labels),
        )
        session.add(dataset)
        session.flush()
        job = Job(
            id=storage.new_id(),
            tenant=tenant,
            name=name,
            status="succeeded",
            dataset_id=dataset.id,
            base_model=TINY_CLIP_NAME,
            hyperparameters={},
            model_id=model_id,
        )
        session.add(job)
        session.flush()
        session.add(
            Model(
                id=model_id,
                tenant=tenant,
                name=name,
                job_id=job.id,
                base_model=TINY_CLIP_NAME,
                kind=kind,
                labels=list(labels),
                prompt_template=prompt_template,
                metrics={"val_accuracy": 0.5} if kind == "classification" else {},
                path=folder.relative_to(settings.data_dir).as_posix(),
                # As the worker records it when it registers a model.
                stored_bytes=storage.folder_bytes(folder),
                created_at=created_at or utcnow(),
            )
        )
    return model_id
