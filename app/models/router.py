"""`GET /models` and `GET /models/{model_id}`: the models that training has registered."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from app.auth.requests import PrincipalDep
from app.core import storage
from app.core.errors import Conflict
from app.core.objects.folders import delete_folder
from app.core.objects.store import CorruptObject, ObjectStoreError
from app.http.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
from app.inference.cache import ModelUnavailable
from app.ml.model_metadata import METADATA_NAME
from app.models import service
from app.models.export import folder_files, model_card, zip_stream
from app.models.files import model_folder
from app.models.schemas import ModelList, ModelPublic
from app.orm.tables import Dataset, Job, Model

logger = logging.getLogger(__name__)
router = APIRouter(tags=["models"])


def get_model_record(model_id: str, session: SessionDep, principal: PrincipalDep) -> Model:
    """The model named by the `model_id` path parameter; 404 when there is none."""
    return service.get_model(session=session, model_id=model_id, principal=principal)


ModelRecordDep = Annotated[Model, Depends(get_model_record)]


def zip_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of a route that answers 200 with a zip."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": {"application/zip": binary}}}


@router.get("/models")
def list_models(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> ModelList:
    """List trained models, newest first."""
    model_records, total = service.list_models(
        session=session, principal=principal, limit=limit, offset=offset
    )
    return ModelList(
        items=[ModelPublic.model_validate(record) for record in model_records], total=total
    )


@router.get("/models/{model_id}")
def read_model(model_record: ModelRecordDep) -> ModelPublic:
    """Show one trained model: its labels, prompt template and validation metrics."""
    return ModelPublic.model_validate(model_record)


@router.get(
    "/models/{model_id}/download",
    response_model=None,
    responses=zip_answer("The model's folder as a zip, with a model card (`README.md`)."),
)
def download_model(
    model_record: ModelRecordDep, session: SessionDep, settings: SettingsDep, request: Request
) -> StreamingResponse:
    """Download a model: its `save_pretrained` folder, `clipft.json`, and a model card with
    its base model, dataset, method, hyperparameters and metrics. 409 if its files are gone."""
    folder = _model_files(model_record, settings, request)
    job = session.get(Job, model_record.job_id)
    dataset = session.get(Dataset, job.dataset_id) if job is not None else None
    card = model_card(
        model=ModelPublic.model_validate(model_record).model_dump(),
        dataset=None
        if dataset is None
        else {
            "id": dataset.id,
            "name": dataset.name,
            "num_train": dataset.num_train,
            "num_val": dataset.num_val,
        },
        hyperparameters=job.hyperparameters if job is not None else {},
        folder=folder,
    )
    return StreamingResponse(
        zip_stream(folder, folder_files(folder), card),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="clipft-model-{model_record.id}.zip"'
        },
    )


@router.get(
    "/models/{model_id}/export",
    response_model=None,
    responses=zip_answer("The model as ONNX: both towers, the classifier, preprocessing."),
)
def export_model(
    model_record: ModelRecordDep,
    settings: SettingsDep,
    request: Request,
    format: Annotated[Literal["onnx"], Query(description="The export format.")],
) -> FileResponse:
    """Export a model to run without clipft or torch: `image_encoder.onnx` and
    `text_encoder.onnx` with a dynamic batch, `classifier.json` (labels and the linear map
    `/predict` applies), `preprocess.json` and the tokenizer. Built on the first request and
    kept; 409 if the model's files are gone."""
    from app.models.exports import onnx_export  # torch.onnx only in processes that export

    folder = _model_files(model_record, settings, request)
    try:
        path = onnx_export(data_dir=settings.data_dir, model_id=model_record.id, folder=folder)
    except ModelUnavailable as error:
        raise Conflict(f"model {model_record.id} cannot be exported: {error}") from error
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"clipft-model-{model_record.id}-{format}.zip",
    )


def _model_files(model_record: Model, settings: SettingsDep, request: Request) -> Path:
    """The model's folder on this machine (fetched from the store if need be); 409 if gone."""
    try:
        folder = model_folder(
            data_dir=settings.data_dir,
            object_cache=request.app.state.object_cache,
            model_id=model_record.id,
        )
    except CorruptObject as error:
        raise Conflict(f"model {model_record.id} has damaged files in the store") from error
    if not (folder / METADATA_NAME).is_file():
        raise Conflict(f"model {model_record.id} has no files on the server any more")
    return folder


@router.delete("/models/{model_id}", status_code=204)
def delete_model(
    model_record: ModelRecordDep, session: SessionDep, settings: SettingsDep, request: Request
) -> None:
    """Delete a model: its row and its files. Its job stays, without a model."""
    model_id = model_record.id
    service.delete_model(session=session, model_record=model_record)
    session.commit()
    request.app.state.model_lookup.forget(model_id)
    model_cache = getattr(request.app.state, "model_cache", None)
    if model_cache is not None:
        model_cache.evict(model_id)
    storage.discard_dir(storage.model_dir(settings.data_dir, model_id))
    storage.discard_dir(storage.exports_dir(settings.data_dir, model_id))
    try:
        delete_folder(request.app.state.object_store, storage.model_object_folder(model_id))
    except ObjectStoreError:
        # The row is gone, so nothing serves it; its objects are left for an operator.
        logger.exception("model %s: its published folder could not be removed", model_id)
