"""`POST /predict` and `POST /embed`: HTTP only, each request handed to its steps.

Read the inputs (`read_request.py`), then in one worker thread: classify with trained models
(`classify.py`) or a base model zero-shot (`zero_shot.py`), or embed (`embed.py`). Every step
takes the one `Serving` object made here.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from app.auth.requests import PrincipalDep
from app.core.instruments import PREDICT_SECONDS
from app.http.deps import SettingsDep
from app.inference.cache import ModelCache
from app.inference.pixels import PixelPool
from app.ml.encode import pick_device
from app.predict import classify, read_request, zero_shot
from app.predict import embed as embedding
from app.predict.read_request import InputReader
from app.predict.schemas import (
    EMBED_OPENAPI,
    ERROR_RESPONSES,
    PREDICT_OPENAPI,
    EmbedResponse,
    PredictResponse,
)
from app.predict.serving import Serving

router = APIRouter(tags=["predict"])


async def get_serving(request: Request, settings: SettingsDep, principal: PrincipalDep) -> Serving:
    """The app's serving parts for this caller; the model cache and the pixel pool are made on
    first use and kept on `app.state` (the model lookup is made by create_app)."""
    # Async on purpose: it runs on the event loop without awaiting, so it cannot race itself.
    state = request.app.state
    model_cache: ModelCache | None = getattr(state, "model_cache", None)
    if model_cache is None:
        model_cache = ModelCache(
            capacity=settings.model_cache_size,
            device=pick_device(settings.device),
            precision=settings.predict_precision,
        )
        state.model_cache = model_cache
    pixel_pool: PixelPool | None = getattr(state, "pixel_pool", None)
    if pixel_pool is None:
        pixel_pool = PixelPool(threads=settings.predict_threads)
        state.pixel_pool = pixel_pool
    return Serving(
        settings=settings,
        model_cache=model_cache,
        pixel_pool=pixel_pool,
        model_lookup=state.model_lookup,
        principal=principal,
        object_cache=state.object_cache,
    )


ServingDep = Annotated[Serving, Depends(get_serving)]


@router.post("/predict", openapi_extra=PREDICT_OPENAPI, responses=ERROR_RESPONSES)
async def predict(request: Request, serving: ServingDep) -> PredictResponse:
    """Classify images over a model's labels (top-k with probabilities), or, given `texts`,
    answer the image x text cosine similarity and per-image softmax over the texts.

    Send either JSON `{"model_id", "images": [base64...], "texts"?, "top_k"?}` or
    multipart/form-data with one or more `files` plus `model_id`, optional `texts` (repeated
    field or one JSON array) and optional `top_k`. `model_ids` (two or more models, in either
    form) in place of `model_id` runs an ensemble: the answer averages the models'
    probabilities (soft voting) and, with texts, their cosine similarities too, and echoes
    `model_ids`.
    """
    request.app.state.predict_rate.take(settings=serving.settings, principal=serving.principal)
    with PREDICT_SECONDS.labels(route="predict").time():
        async with read_request.predict_input(request, serving) as read_input:
            # Everything else runs in a worker thread, so the event loop never waits on
            # parsing, decoding or the model; one hop there and back, since each hop wakes two
            # threads and costs the event loop a round.
            return await run_in_threadpool(_answer, read_input, serving)


def _answer(read_input: InputReader, serving: Serving) -> PredictResponse:
    predict_input = read_input()
    if predict_input.base_model is not None:
        return zero_shot.answer(serving=serving, predict_input=predict_input)
    return classify.answer(serving=serving, predict_input=predict_input)


@router.post("/embed", responses=ERROR_RESPONSES, openapi_extra=EMBED_OPENAPI)
async def embed(request: Request, serving: ServingDep) -> EmbedResponse:
    """Unit-length vectors for images and/or texts, from a trained model (`model_id`) or a base
    model (`base_model`), for search and clustering of your own. Images and texts share one
    space: their dot product is CLIP's cosine similarity."""
    request.app.state.predict_rate.take(settings=serving.settings, principal=serving.principal)
    with PREDICT_SECONDS.labels(route="embed").time():
        embed_in = await read_request.embed_request(request, serving.settings)
        return await run_in_threadpool(embedding.answer, serving=serving, embed_in=embed_in)
