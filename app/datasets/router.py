"""HTTP routes for datasets."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from app.auth.quotas import upload_allowance, upload_quota_exceeded
from app.auth.requests import PrincipalDep
from app.core.errors import PayloadTooLarge
from app.core.storage import dataset_dir, discard_dir, new_id, require_free_disk
from app.datasets import service
from app.datasets.schemas import DatasetList, DatasetPublic
from app.datasets.upload import receive_upload
from app.http.deps import LimitQuery, OffsetQuery, SessionDep, SettingsDep
from app.orm.models import Dataset

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
    allowance = await run_in_threadpool(
        upload_allowance, session=session, settings=settings, principal=principal
    )
    max_bytes = settings.max_upload_bytes
    quota_binds = allowance is not None and allowance < max_bytes
    dataset_id = new_id()
    try:
        upload = await receive_upload(
            request,
            folder=dataset_dir(settings.data_dir, dataset_id),
            max_bytes=min(max_bytes, allowance) if allowance is not None else max_bytes,
        )
    except PayloadTooLarge:
        if quota_binds:
            raise upload_quota_exceeded(principal, settings.tenant_max_upload_bytes or 0) from None
        raise
    # Decoding every image is slow, blocking work: keep it off the event loop.
    dataset = await run_in_threadpool(
        service.create,
        session=session,
        settings=settings,
        dataset_id=dataset_id,
        upload=upload,
        tenant=principal.tenant,
    )
    return DatasetPublic.model_validate(dataset)


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
def delete_dataset(dataset: DatasetDep, session: SessionDep, settings: SettingsDep) -> None:
    """Delete a dataset: its row and its images (409 while any job uses it)."""
    dataset_id = dataset.id
    service.delete(session=session, dataset=dataset)
    session.commit()
    discard_dir(dataset_dir(settings.data_dir, dataset_id))
