"""Read a `/predict` or `/embed` request: its body within the limits, JSON or multipart.

A JSON body is received whole, then validated and its base64 decoded in the worker thread (the
returned reader does it); a multipart body is parsed part by part as it arrives, each image
handed to `EarlyDecode` the moment it ends.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.core.config import Settings
from app.core.errors import ClientError, PayloadTooLarge
from app.http.multipart_parts import multipart_boundary
from app.http.request_body import refuse_declared_oversize, stream_within
from app.inference.pixels import PendingPixels
from app.predict.early_decode import EarlyDecode
from app.predict.form_reader import FormLimits, form_list, read_form
from app.predict.inputs import ImageUpload, PredictInput, check_request, decode_base64_images
from app.predict.schemas import (
    MAX_ENSEMBLE_MODELS,
    EmbedRequest,
    PredictJsonRequest,
    PredictOptions,
)
from app.predict.serving import Serving

SchemaT = TypeVar("SchemaT", bound=BaseModel)

# Room in a JSON body for everything besides the images: model ids, texts, top_k and the rest.
JSON_FIELDS_ALLOWANCE = 16 * 1024**2
# Room in a multipart body for form fields besides `texts`: model_id or model_ids, top_k,
# min_confidence and a few spare.
EXTRA_FORM_FIELDS = MAX_ENSEMBLE_MODELS + 8
# Room per image in a multipart body for its part's boundary and headers.
MULTIPART_PART_ALLOWANCE = 4096
# A text field's limit, as Starlette's form parser sets it.
MAX_FORM_FIELD_BYTES = 1024**2
# Form fields that carry a list: the field repeated, or once holding a JSON array of strings.
LIST_FORM_FIELDS = ("texts", "model_ids", "labels", "prompt_templates")

# What parses the request in the worker thread, handing on its input.
InputReader = Callable[[], PredictInput]


@asynccontextmanager
async def predict_input(request: Request, serving: Serving) -> AsyncIterator[InputReader]:
    """The body read, and what turns it into the request's input (in the worker thread).

    On leaving, answered or refused, images still waiting to be decoded early are dropped.
    """
    early = EarlyDecode(
        pixel_pool=serving.pixel_pool,
        limits=serving.image_limits,
        model_cache=serving.model_cache,
        model_lookup=serving.model_lookup,
        principal=serving.principal,
        enabled=serving.settings.decodes_early,
    )
    try:
        yield await _input_reader(request, serving.settings, early)
    finally:
        early.cancel()


async def embed_request(request: Request, settings: Settings) -> EmbedRequest:
    """An `/embed` body, read within its limit and validated."""
    body = await _read_body(request, max_bytes=_max_json_bytes(settings))
    return _validated(lambda: EmbedRequest.model_validate_json(body))


async def _input_reader(request: Request, settings: Settings, early: EarlyDecode) -> InputReader:
    """The read multipart form as it is, or the JSON body's validation and base64 decoding."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
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


def _as_is(read_input: PredictInput) -> PredictInput:
    return read_input


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
    check_request(num_images=len(request_in.images), texts=request_in.texts, settings=settings)
    return _predict_input(request_in, images=decode_base64_images(images=request_in.images))


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
    check_request(num_images=len(form.images), texts=options.texts, settings=settings)
    return _predict_input(options, images=form.images, pending_pixels=early.pending())


def _predict_input(
    options: PredictOptions,
    *,
    images: list[ImageUpload],
    pending_pixels: PendingPixels | None = None,
) -> PredictInput:
    """What a request asks, read from a JSON body or a form alike (both are PredictOptions)."""
    return PredictInput(
        model_ids=options.requested_model_ids,
        base_model=options.base_model,
        labels=options.labels,
        prompt_templates=options.prompt_templates,
        images=images,
        texts=options.texts,
        top_k=options.top_k,
        min_confidence=options.min_confidence,
        pending_pixels=pending_pixels,
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
