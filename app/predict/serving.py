"""What every step of a `/predict` or `/embed` request needs, carried in one object.

`Serving` holds the settings, the model cache (whose entries share forward passes between
concurrent requests), the pixel pool, the memory of served models' rows and the caller; the
steps (`classify.py`, `zero_shot.py`, `embed.py`) ask it for models and pixels instead of each
taking five parameters and handing them on.

The database is only read when a model's row is not remembered, in a session of its own that
is closed (and its pooled connection returned) before any image is decoded or the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from app.core.config import Settings
from app.core.db import session_scope
from app.core.errors import Conflict, Unprocessable
from app.core.objects.cache import ObjectCache
from app.core.objects.store import CorruptObject
from app.core.principal import Principal
from app.inference.cache import CachedModel, ModelCache, ModelUnavailable
from app.inference.pixels import BadImage, PendingPixels, PixelPool, gather
from app.ml.base_models import BaseModelRefused, check_base_model
from app.ml.images import ImageLimits
from app.ml.preprocess import PixelSpec
from app.models.files import model_folder
from app.models.service import get_models
from app.predict.inputs import ImageUpload, check_image_size
from app.predict.model_lookup import ModelLookup


@dataclass(frozen=True)
class ServedModel:
    """What serving needs of a model's row, read before the session closes."""

    id: str
    path: str
    kind: str
    labels: list[str]


def image_limits(settings: Settings) -> ImageLimits:
    """What a /predict image may be: its pixels and its bytes."""
    return ImageLimits(
        max_pixels=settings.max_image_pixels, max_bytes=settings.predict_max_image_bytes
    )


@dataclass(frozen=True)
class Serving:
    """One request's view of the api's serving parts, and who is asking."""

    settings: Settings
    model_cache: ModelCache
    pixel_pool: PixelPool
    model_lookup: ModelLookup[ServedModel]
    principal: Principal
    # Models whose folder is not in this machine's data dir come from the object store.
    object_cache: ObjectCache

    @property
    def image_limits(self) -> ImageLimits:
        return image_limits(self.settings)

    def find_models(self, model_ids: list[str]) -> list[ServedModel]:
        """The models' rows, in order: remembered by the lookup, or read in a short session of
        their own; `NotFound` if any is unknown (or another tenant's)."""

        def read(ids: list[str]) -> list[ServedModel]:
            settings = self.settings
            with session_scope(settings.resolved_database_url, settings.database_pool) as session:
                return [
                    ServedModel(
                        id=model_record.id,
                        path=model_record.path,
                        kind=model_record.kind,
                        labels=list(model_record.labels),
                    )
                    for model_record in get_models(
                        session=session, model_ids=ids, principal=self.principal
                    )
                ]

        return self.model_lookup.find(model_ids, self.principal, read)

    def trained_model(self, served: ServedModel) -> CachedModel:
        """A registered model loaded for serving (its folder from the data dir, else from the
        object store); 409 if its files are missing, damaged or do not load."""
        try:
            return self.model_cache.get_or_load(served.id, lambda: self._folder_of(served))
        except CorruptObject as error:
            raise Conflict(f"model {served.id} cannot be served: its files are damaged") from error
        except ModelUnavailable as error:
            raise Conflict(
                f"model {served.id} cannot be served: {error} ({served.path})"
            ) from error

    def _folder_of(self, served: ServedModel) -> Path:
        return model_folder(
            data_dir=self.settings.data_dir, object_cache=self.object_cache, model_id=served.id
        )

    def base_model(self, name: str) -> CachedModel:
        """A base model loaded for serving, if it is one this server may load (else 422 / 409)."""
        settings = self.settings
        try:
            check_base_model(name, settings.base_models_dir, settings.hub_model_allowed)
        except BaseModelRefused as error:
            raise Unprocessable(f"base_model: {error}") from None
        try:
            return self.model_cache.get_base(name, settings.base_models_dir)
        except ModelUnavailable as error:
            raise Conflict(f"base model {name} cannot be served: {error}") from error

    def pixels(
        self, uploads: list[ImageUpload], *, spec: PixelSpec, pending: PendingPixels | None = None
    ) -> torch.Tensor:
        """Decode and preprocess every image in parallel, or collect those already decoding for
        `spec`; a 422 names the first that does not decode."""
        max_bytes = self.settings.predict_max_image_bytes
        for upload in uploads:
            check_image_size(name=upload.name, size=len(upload.payload), max_bytes=max_bytes)
        try:
            if (
                pending is not None
                and pending.spec == spec
                and len(pending.futures) == len(uploads)
            ):
                return gather(pending.futures)
            return self.pixel_pool.batch(
                [upload.payload for upload in uploads], limits=self.image_limits, spec=spec
            )
        except BadImage as error:
            raise Unprocessable(f"{uploads[error.index].name}: {error.reason}") from None
