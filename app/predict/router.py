"""`POST /predict`: classify images with a trained model, or compare them with texts."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth.requests import PrincipalDep
from app.core.config import Settings
from app.core.errors import ClientError, PayloadTooLarge
from app.core.instruments import PREDICT_SECONDS
from app.core.principal import Principal
from app.http.deps import SettingsDep
from app.http.multipart_parts import multipart_boundary
from app.http.request_body import refuse_declared_oversize, stream_within
from app.inference.cache import ModelCache
from app.inference.pixels import PixelPool
from app.ml.encode import pick_device
from app.predict import service
from app.predict.early_decode import EarlyDecode
from app.predict.form_reader import FormLimits, form_list, read_form
from app.predict.model_lookup import ModelLookup
from app.predict.schemas import (
    MAX_ENSEMBLE_MODELS,
    MAX_TOP_K,
    EmbedRequest,
    EmbedResponse,
    PredictJsonRequest,
    PredictOptions,
    PredictResponse,
)
from app.predict.service import PredictInput, ServedModel

router = APIRouter(tags=["predict"])

SchemaT = TypeVar("SchemaT", bound=BaseModel)

# Room in a JSON body for everything besides the images: model ids, texts, top_k.
JSON_FIELDS_ALLOWANCE = 16 * 1024**2
# Room in a multipart body for form fields besides `texts`: model_id or model_ids, top_k and a
# few spare.
EXTRA_FORM_FIELDS = MAX_ENSEMBLE_MODELS + 8
# Room per image in a multipart body for its part's boundary and headers.
MULTIPART_PART_ALLOWANCE = 4096
# A text field's limit, as Starlette's form parser sets it.
MAX_FORM_FIELD_BYTES = 1024**2
# Form fields that carry a list: the field repeated, or once holding a JSON array of strings.
LIST_FORM_FIELDS = ("texts", "model_ids", "labels", "prompt_templates")

_MULTIPART_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "model_id": {"type": "string", "description": "The trained model to run; or `model_ids`."},
        "model_ids": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": MAX_ENSEMBLE_MODELS,
            "description": (
                "In place of `model_id`, an ensemble (soft voting): repeat the field once per "
                "model, or send one JSON array of strings."
            ),
        },
        "base_model": {
            "type": "string",
            "description": "In place of a trained model: a base model used zero-shot.",
        },
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With base_model: the classes (repeat the field, or a JSON array).",
        },
        "prompt_templates": {
            "type": "array",
            "items": {"type": "string"},
            "description": "With labels: prompts with {} for the label (repeat, or a JSON array).",
        },
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "texts": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Repeat the field once per text, or send one JSON array of strings.",
        },
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
    },
}
_OPENAPI_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictJsonRequest.model_json_schema()},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No model with this id (the message names every unknown id)."},
    409: {"description": "The model is registered but its files are missing or do not load."},
    413: {"description": "Too many images or texts, or an image or the body is too large."},
    415: {"description": "The body is neither JSON nor multipart/form-data."},
    422: {"description": "Bad input: the message names the field, image index or file."},
}


async def get_model_cache(request: Request, settings: SettingsDep) -> ModelCache:
    """The app's model cache, made on first use and kept on `app.state.model_cache`."""
    # Async on purpose: it runs on the event loop without awaiting, so it cannot race itself.
    model_cache: ModelCache | None = getattr(request.app.state, "model_cache", None)
    if model_cache is None:
        model_cache = ModelCache(
            capacity=settings.model_cache_size,
            device=pick_device(settings.device),
            precision=settings.predict_precision,
        )
        request.app.state.model_cache = model_cache
    return model_cache


async def get_pixel_pool(request: Request, settings: SettingsDep) -> PixelPool:
    """The app's image decoding threads, made on first use and kept on `app.state.pixel_pool`."""
    pixel_pool: PixelPool | None = getattr(request.app.state, "pixel_pool", None)
    if pixel_pool is None:
        pixel_pool = PixelPool(threads=settings.predict_threads)
        request.app.state.pixel_pool = pixel_pool
    return pixel_pool


async def get_model_lookup(request: Request) -> ModelLookup[ServedModel]:
    """The app's memory of served models' rows (`app.state.model_lookup`, made by create_app)."""
    model_lookup: ModelLookup[ServedModel] = request.app.state.model_lookup
    return model_lookup


ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]
PixelPoolDep = Annotated[PixelPool, Depends(get_pixel_pool)]
ModelLookupDep = Annotated[ModelLookup[ServedModel], Depends(get_model_lookup)]


@router.post("/predict", openapi_extra=_OPENAPI_EXTRA, responses=_ERROR_RESPONSES)
async def predict(
    request: Request,
    settings: SettingsDep,
    model_cache: ModelCacheDep,
    pixel_pool: PixelPoolDep,
    model_lookup: ModelLookupDep,
    principal: PrincipalDep,
) -> PredictResponse:
    """Classify images over a model's labels (top-k with probabilities), or, given `texts`,
    answer the image x text cosine similarity and per-image softmax over the texts.

    Send either JSON `{"model_id", "images": [base64...], "texts"?, "top_k"?}` or
    multipart/form-data with one or more `files` plus `model_id`, optional `texts` (repeated
    field or one JSON array) and optional `top_k`. `model_ids` (two or more models, in either
    form) in place of `model_id` runs an ensemble: the answer averages the models'
    probabilities (soft voting) and, with texts, their cosine similarities too, and echoes
    `model_ids`.
    """
    request.app.state.predict_rate.take(settings=settings, principal=principal)
    with PREDICT_SECONDS.labels(route="predict").time():
        return await _predict(request, settings, model_cache, pixel_pool, model_lookup, principal)


async def _predict(
    request: Request,
    settings: Settings,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    model_lookup: ModelLookup[ServedModel],
    principal: Principal,
) -> PredictResponse:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    early = EarlyDecode(
        pixel_pool=pixel_pool,
        limits=service.image_limits(settings),
        model_cache=model_cache,
        model_lookup=model_lookup,
        principal=principal,
        enabled=settings.decodes_early,
    )
    try:
        read_input = await _input_reader(request, settings, media_type, early)
        # No database session here: the service reads the model's row in a session of its own
        # and returns the connection before the model runs. Everything runs in a worker
        # thread, so the event loop never waits on parsing, decoding or the model; one hop
        # there and back, since each hop wakes two threads and costs the event loop a round.
        return await run_in_threadpool(
            _read_and_predict,
            read_input,
            model_cache=model_cache,
            pixel_pool=pixel_pool,
            model_lookup=model_lookup,
            settings=settings,
            principal=principal,
        )
    finally:
        # Answered or refused, images still waiting to be decoded early are no longer wanted.
        early.cancel()


async def _input_reader(
    request: Request, settings: Settings, media_type: str, early: EarlyDecode
) -> Callable[[], PredictInput]:
    """What parses the request in the worker thread: the read multipart form as it is, or the
    JSON body's validation and base64 decoding."""
    if media_type == "multipart/form-data":
        return partial(_as_is, await _read_multipart(request, settings, early))
    if media_type == "application/json" or media_type.endswith("+json"):
        body = await _read_body(request, max_bytes=_max_json_bytes(settings))
        return partial(_parse_json, body, settings)
    raise ClientError(
        f"unsupported content type {media_type or '(none)'!r}: send application/json or "
        "multipart/form-data",
        status_code=415,
    )


def _read_and_predict(
    read_input: Callable[[], PredictInput],
    *,
    model_cache: ModelCache,
    pixel_pool: PixelPool,
    model_lookup: ModelLookup[ServedModel],
    settings: Settings,
    principal: Principal,
) -> PredictResponse:
    return service.predict(
        model_cache=model_cache,
        pixel_pool=pixel_pool,
        settings=settings,
        predict_input=read_input(),
        principal=principal,
        model_lookup=model_lookup,
    )


def _as_is(predict_input: PredictInput) -> PredictInput:
    return predict_input


def _max_json_bytes(settings: Settings) -> int:
    base64_image_bytes = 4 * math.ceil(settings.predict_max_image_bytes / 3)
    return settings.predict_max_images * base64_image_bytes + JSON_FIELDS_ALLOWANCE


async def _read_body(request: Request, *, max_bytes: int) -> bytes:
    return b"".join([chunk async for chunk in _body_chunks(request, max_bytes=max_bytes)])


def _body_chunks(request: Request, *, max_bytes: int) -> AsyncIterator[bytes]:
    """The body as it arrives: a 413 before reading when its declared length is over
    `max_bytes`, and as soon as the bytes received are."""

    def too_large(_declared: int | None = None) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body is over the limit of {max_bytes} bytes")

    refuse_declared_oversize(request.headers, max_bytes, too_large)
    return stream_within(request, max_bytes, too_large)


def _parse_json(body: bytes, settings: Settings) -> PredictInput:
    request_in = _validated(lambda: PredictJsonRequest.model_validate_json(body))
    service.check_request(
        num_images=len(request_in.images), texts=request_in.texts, settings=settings
    )
    return PredictInput(
        model_ids=request_in.requested_model_ids,
        base_model=request_in.base_model,
        labels=request_in.labels,
        prompt_templates=request_in.prompt_templates,
        images=service.decode_base64_images(images=request_in.images),
        texts=request_in.texts,
        top_k=request_in.top_k,
    )


async def _read_multipart(request: Request, settings: Settings, early: EarlyDecode) -> PredictInput:
    boundary = multipart_boundary(request.headers)
    if boundary is None:
        raise ClientError("multipart/form-data needs a boundary parameter in its content type")
    form = await read_form(
        _body_chunks(request, max_bytes=_max_multipart_bytes(settings)),
        boundary=boundary,
        limits=FormLimits(
            max_images=settings.predict_max_images,
            max_image_bytes=settings.predict_max_image_bytes,
            max_texts=settings.predict_max_texts,
            max_other_fields=EXTRA_FORM_FIELDS,
            max_field_bytes=MAX_FORM_FIELD_BYTES,
        ),
        on_image=early.image_arrived,
    )
    options = _form_options(form.fields)
    service.check_request(num_images=len(form.images), texts=options.texts, settings=settings)
    return PredictInput(
        model_ids=options.requested_model_ids,
        base_model=options.base_model,
        labels=options.labels,
        prompt_templates=options.prompt_templates,
        images=form.images,
        texts=options.texts,
        top_k=options.top_k,
        pending_pixels=early.pending(),
    )


def _max_multipart_bytes(settings: Settings) -> int:
    per_image = settings.predict_max_image_bytes + MULTIPART_PART_ALLOWANCE
    return settings.predict_max_images * per_image + JSON_FIELDS_ALLOWANCE


def _form_options(fields: dict[str, list[str]]) -> PredictOptions:
    form_fields: dict[str, Any] = {
        key: form_list(key, values)
        if key in LIST_FORM_FIELDS
        else (values[0] if len(values) == 1 else values)
        for key, values in fields.items()
    }
    return _validated(lambda: PredictOptions.model_validate(form_fields))


def _validated(validate: Callable[[], SchemaT]) -> SchemaT:
    """Run a pydantic validation; its errors become FastAPI's usual 422 with `body` locations."""
    try:
        return validate()
    except ValidationError as error:
        errors = [
            {**detail, "loc": ("body", *detail["loc"])}
            for detail in error.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


@router.post(
    "/embed",
    responses=_ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbedRequest.model_json_schema()}},
        }
    },
)
async def embed(
    request: Request,
    settings: SettingsDep,
    model_cache: ModelCacheDep,
    pixel_pool: PixelPoolDep,
    model_lookup: ModelLookupDep,
    principal: PrincipalDep,
) -> EmbedResponse:
    """Unit-length vectors for images and/or texts, from a trained model (`model_id`) or a base
    model (`base_model`), for search and clustering of your own. Images and texts share one
    space: their dot product is CLIP's cosine similarity."""
    request.app.state.predict_rate.take(settings=settings, principal=principal)
    with PREDICT_SECONDS.labels(route="embed").time():
        body = await _read_body(request, max_bytes=_max_json_bytes(settings))
        embed_in = _validated(lambda: EmbedRequest.model_validate_json(body))
        return await run_in_threadpool(
            service.embed,
            model_cache=model_cache,
            pixel_pool=pixel_pool,
            settings=settings,
            request=embed_in,
            principal=principal,
            model_lookup=model_lookup,
        )
