"""Decode a multipart request's images while the rest of its body is still arriving.

Reading a 64-image body (13 MB) and parsing it took 25-50 ms on two cores before the first
image could start decoding. Here each image is queued on the pixel pool the moment its part
ends, provided the request's model is already known to this process: its row remembered for
this principal and its weights loaded, which is the case for every request after a model's
first. Nothing is waited on and nothing is read to find that out, so a request whose model is
not known yet only loses the head start: its images decode after the body, as before.

It can only pay where cores are idle while the body arrives. Where the pixel threads are as
many as the cores, decoding early makes them contend with the event loop receiving the body:
on two cores a 64-image request took about 8 ms longer with it. `predict_early_decode` says
when it runs.

Nothing here decides what the request may do: the service looks the model up again and
answers its errors as usual, and decoded pixels a refused request leaves behind are dropped.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from app.core.errors import Unprocessable
from app.core.principal import Principal
from app.inference.cache import BASE_MODEL_KEY, CachedModel, ModelCache
from app.inference.pixels import PendingPixels, PixelPool, cancel
from app.ml.images import ImageLimits
from app.ml.preprocess import PixelSpec
from app.predict.form_reader import form_list
from app.predict.inputs import ImageUpload
from app.predict.model_lookup import ModelLookup
from app.predict.serving import ServedModel


@dataclass
class EarlyDecode:
    pixel_pool: PixelPool
    limits: ImageLimits
    model_cache: ModelCache
    model_lookup: ModelLookup[ServedModel]
    principal: Principal
    enabled: bool = True
    _spec: PixelSpec | None = field(default=None, init=False)
    _decided: bool = field(default=False, init=False)
    _futures: list[Future[torch.Tensor]] = field(default_factory=list, init=False)

    def image_arrived(self, image: ImageUpload, fields: dict[str, list[str]]) -> None:
        """Queue this image's decoding if the model is known; the first image decides that."""
        if not self._decided:
            self._decided = True
            self._spec = self._known_spec(fields) if self.enabled else None
        if self._spec is not None:
            self._futures.append(
                self.pixel_pool.submit(image.payload, limits=self.limits, spec=self._spec)
            )

    def pending(self) -> PendingPixels | None:
        """The images queued so far for the model's spec; None if none could be."""
        if self._spec is None:
            return None
        return PendingPixels(spec=self._spec, futures=list(self._futures))

    def cancel(self) -> None:
        """Drop what has not begun decoding: the request failed, or was answered."""
        cancel(self._futures)

    def _known_spec(self, fields: dict[str, list[str]]) -> PixelSpec | None:
        """The first model's pixel spec, from what this process already holds, or None."""
        cached = self._known_model(fields)
        return cached.pixel_spec if cached is not None else None

    def _known_model(self, fields: dict[str, list[str]]) -> CachedModel | None:
        base_models = fields.get("base_model", [])
        if base_models:
            return self.model_cache.loaded(BASE_MODEL_KEY.format(base_models[0]))
        model_id = _first_model_id(fields)
        if model_id is None:
            return None
        served = self.model_lookup.remembered(model_id, self.principal)
        return self.model_cache.loaded(served.id) if served is not None else None


def _first_model_id(fields: dict[str, list[str]]) -> str | None:
    """`model_id`, or the first of `model_ids` (repeated, or one JSON array); None if neither
    is there yet or either is malformed (the service names the problem)."""
    if fields.get("model_id"):
        return fields["model_id"][0]
    try:
        model_ids = form_list("model_ids", fields.get("model_ids", []))
    except Unprocessable:
        return None
    first = model_ids[0] if isinstance(model_ids, list) and model_ids else None
    return first if isinstance(first, str) else None
