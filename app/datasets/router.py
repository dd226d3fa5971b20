"""HTTP routes for datasets."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import quotas
from app.auth.requests import PrincipalDep
from app.core.config import Settings
from app.core.errors import ClientError, PayloadTooLarge
from app.core.principal import Principal
from app.core.storage import dataset_dir, discard_dir, new_id, require_free_disk
from app.datasets import service
from app.datasets.schemas import DatasetList, DatasetPublic
from app.datasets.upload import receive_upload
from app.http.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
from app.http.request_body import declared_length
from app.orm.tables import Dataset

logger = logging.getLogger(__name__)
router = APIRouter(tags=["datasets"])

# The body is parsed by hand (to stream it to disk), so describe it for the OpenAPI schema.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "a zip"},
                        "name": {"type": "string", "maxLength": service.MAX_NAME_CHARS},
                    },
                }
            }
        },
    }
}


def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> Dataset:
    """The dataset named in the path, or a 404."""
    return service.get(session=session, dataset_id=dataset_id, principal=principal)


DatasetDep = Annotated[Dataset, Depends(get_dataset)]


@router.post("/datasets", status_code=201, response_model=DatasetPublic, openapi_extra=_UPLOAD_BODY)
async def create_dataset(
    request: Request, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> DatasetPublic:
    """Upload a zip of images (class folders, or metadata.csv/jsonl); it is checked and split."""
    require_free_disk(settings.data_dir, settings.min_free_disk_bytes)
    dataset_id = new_id()
    body_limit = await run_in_threadpool(
        _reserve,
        session=session,
        settings=settings,
        principal=principal,
        request=request,
        dataset_id=dataset_id,
    )
    try:
        dataset = await _receive_and_store(
            request,
            session=session,
            settings=settings,
            principal=principal,
            dataset_id=dataset_id,
            body_limit=body_limit,
        )
    except BaseException as error:
        # Shielded: a cancelled request must still free what it reserved.
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                service.release_reservation,
                session=session,
                principal=principal,
                dataset_id=dataset_id,
                refusal=error if isinstance(error, ClientError) else None,
            )
        raise
    return DatasetPublic.model_validate(dataset)


def _reserve(
    *,
    session: Session,
    settings: Settings,
    principal: Principal,
    request: Request,
    dataset_id: str,
) -> int:
    """Reserve the upload's quota and commit it, before the body is read."""
    body_limit = quotas.reserve_upload(
        session=session,
        settings=settings,
        principal=principal,
        dataset_id=dataset_id,
        declared_bytes=declared_length(request.headers),
    )
    session.commit()
    return body_limit


async def _receive_and_store(
    request: Request,
    *,
    session: Session,
    settings: Settings,
    principal: Principal,
    dataset_id: str,
    body_limit: int,
) -> Dataset:
    """Stream the body to the dataset's folder, store its images and commit its row."""
    try:
        upload = await receive_upload(
            request, folder=dataset_dir(settings.data_dir, dataset_id), max_bytes=body_limit
        )
    except PayloadTooLarge:
        if body_limit < settings.max_upload_bytes:  # the quota, not the size limit, is hit
            raise quotas.body_over_quota(principal, settings) from None
        raise
    # Decoding every image is slow, blocking work: keep it off the event loop.
    dataset = await run_in_threadpool(
        service.create,
        session=session,
        settings=settings,
        store=request.app.state.object_store,
        dataset_id=dataset_id,
        upload=upload,
        principal=principal,
    )
    # Committed here, not after the route: the reservation it replaced must not outlive it.
    await run_in_threadpool(session.commit)
    return dataset


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
def read_dataset(dataset: DatasetDep) -> DatasetPublic:
    """One dataset."""
    return DatasetPublic.model_validate(dataset)


@router.get("/datasets", response_model=DatasetList)
def list_datasets(
    session: SessionDep,
    principal: PrincipalDep,
    limit: LimitQuery = 50,
    offset: OffsetQuery = 0,
) -> DatasetList:
    """Datasets, newest first."""
    datasets, total = service.list_datasets(
        session=session, principal=principal, limit=limit, offset=offset
    )
    return DatasetList(items=[DatasetPublic.model_validate(d) for d in datasets], total=total)


@router.delete("/datasets/{dataset_id}", status_code=204)
def delete_dataset(
    dataset: DatasetDep, session: SessionDep, settings: SettingsDep, request: Request
) -> None:
    """Delete a dataset: its row, its images and its objects (409 while any job uses it)."""
    dataset_id = dataset.id
    service.delete(session=session, dataset=dataset)
    session.commit()
    discard_dir(dataset_dir(settings.data_dir, dataset_id))
    service.unpublish_dataset(request.app.state.object_store, dataset_id)
