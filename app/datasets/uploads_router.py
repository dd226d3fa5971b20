"""HTTP routes for resumable uploads: `POST /uploads`, chunks by `PATCH`, then `complete`.

POST  /uploads                 {"size": N, "name": ...}       -> 201, the upload (received 0)
PATCH /uploads/{id}            Upload-Offset: K, raw bytes    -> the upload (received K+len)
GET   /uploads/{id}                                           -> how far it got
POST  /uploads/{id}/complete                                  -> 201, the dataset
DELETE /uploads/{id}                                          -> 204, its chunks removed
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import quotas
from app.auth.requests import PrincipalDep
from app.core.config import Settings
from app.core.errors import ClientError, Conflict, PayloadTooLarge, Unprocessable
from app.core.objects.store import ObjectStore
from app.core.principal import Principal
from app.core.storage import new_id, remove_dir_if_empty, require_free_disk
from app.datasets import resumable, service
from app.datasets.schemas import DatasetPublic, UploadCreate, UploadPublic
from app.http.deps import SessionDep, SettingsDep
from app.http.request_body import refuse_declared_oversize, stream_within
from app.orm.base import utcnow
from app.orm.tables import Upload

logger = logging.getLogger(__name__)
router = APIRouter(tags=["uploads"])

_CHUNK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def public(upload: Upload, settings: Settings) -> UploadPublic:
    return UploadPublic(
        id=upload.id,
        size=upload.size,
        received=upload.received,
        status=upload.status,
        name=upload.name,
        filename=upload.filename,
        chunk_max_bytes=settings.upload_chunk_max_bytes,
        dataset_id=upload.id if upload.status == resumable.COMPLETED else None,
        created_at=upload.created_at,
        updated_at=upload.updated_at,
    )


def get_upload(upload_id: str, session: SessionDep, principal: PrincipalDep) -> Upload:
    """The upload named in the path, or a 404."""
    return resumable.get(session=session, upload_id=upload_id, principal=principal)


UploadDep = Annotated[Upload, Depends(get_upload)]
OffsetHeader = Annotated[
    str, Header(alias="Upload-Offset", description="Where this chunk starts in the zip.")
]


@router.post("/uploads", status_code=201, response_model=UploadPublic)
def create_upload(
    body: UploadCreate, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> UploadPublic:
    """Start a resumable upload of a zip of `size` bytes; its quota is reserved now."""
    require_free_disk(settings.data_dir, settings.min_free_disk_bytes)
    upload = resumable.create(
        session=session,
        principal=principal,
        size=body.size,
        max_bytes=settings.max_upload_bytes,
        name=body.name.strip() if body.name else None,
        filename=body.filename,
    )
    quotas.reserve_upload(
        session=session,
        settings=settings,
        principal=principal,
        dataset_id=upload.id,
        declared_bytes=body.size,
    )
    session.commit()
    return public(upload, settings)


@router.get("/uploads/{upload_id}", response_model=UploadPublic)
def read_upload(upload: UploadDep, settings: SettingsDep) -> UploadPublic:
    """How far the upload got: send the next chunk at `received`."""
    return public(upload, settings)


@router.patch("/uploads/{upload_id}", response_model=UploadPublic, openapi_extra=_CHUNK_BODY)
async def append_chunk(
    request: Request,
    upload: UploadDep,
    session: SessionDep,
    settings: SettingsDep,
    upload_offset: OffsetHeader,
) -> UploadPublic:
    """Store the next chunk (it must start at `Upload-Offset`, the bytes received so far)."""
    if not upload_offset.isdigit():
        raise Unprocessable(f"Upload-Offset: {upload_offset!r} is not a byte offset")
    offset = int(upload_offset)
    resumable.require_next_offset(upload, offset)
    limit = min(settings.upload_chunk_max_bytes, upload.size - offset)

    def too_large(length: int | None = None) -> PayloadTooLarge:
        sent = "" if length is None else f" of {length} bytes"
        return PayloadTooLarge(
            f"chunk{sent}: at most {limit} bytes fit here (chunks of at most "
            f"{settings.upload_chunk_max_bytes}; {upload.size - offset} bytes of the upload left)"
        )

    refuse_declared_oversize(request.headers, limit, too_large)
    staging = resumable.staging_dir(settings.data_dir, upload.id)
    staging.mkdir(parents=True, exist_ok=True)
    piece = staging / f"{offset}-{new_id()}"
    try:
        length, sha256 = await _receive_chunk(request, piece, limit, too_large)
        if length == 0:
            raise Unprocessable("chunk: empty; send the bytes that start at Upload-Offset")
        await run_in_threadpool(
            _store_chunk,
            session=session,
            store=request.app.state.object_store,
            upload=upload,
            offset=offset,
            piece=piece,
            length=length,
            sha256=sha256,
        )
    finally:
        piece.unlink(missing_ok=True)
        # Not empty while another chunk of this upload is arriving on this host.
        remove_dir_if_empty(staging)
    return public(resumable.reread(session, upload.id), settings)


async def _receive_chunk(
    request: Request, piece: Path, limit: int, too_large: Any
) -> tuple[int, str]:
    """The request's body written to `piece`: its length and SHA-256."""
    digest, length = hashlib.sha256(), 0
    async with await anyio.open_file(piece, "wb") as out:
        async for data in stream_within(request, limit, too_large):
            digest.update(data)
            length += len(data)
            await out.write(data)
    return length, digest.hexdigest()


def _store_chunk(
    *,
    session: Session,
    store: ObjectStore,
    upload: Upload,
    offset: int,
    piece: Path,
    length: int,
    sha256: str,
) -> None:
    """The object first, then the row that makes it count: a chunk acknowledged is stored."""
    key = resumable.chunk_key(upload.id, offset)
    store.put_file(key, piece)
    counted = resumable.record_chunk(
        session=session, upload=upload, offset=offset, length=length, key=key, sha256=sha256
    )
    session.commit()
    if not counted:
        store.delete(key)
        # Explains what to send instead (or that the upload was deleted meanwhile).
        resumable.require_next_offset(resumable.reread(session, upload.id), offset)
        raise Conflict(f"upload {upload.id}: another request stored the chunk at {offset}")


@router.post("/uploads/{upload_id}/complete", status_code=201, response_model=DatasetPublic)
async def complete_upload(
    request: Request,
    upload: UploadDep,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> DatasetPublic:
    """Ingest the whole zip as `POST /datasets` would: the dataset gets the upload's id."""
    require_free_disk(settings.data_dir, settings.min_free_disk_bytes)
    store: ObjectStore = request.app.state.object_store
    upload_id = upload.id
    stale_before = utcnow() - timedelta(seconds=settings.orphan_upload_grace_seconds)
    await run_in_threadpool(_claim, session=session, upload=upload, stale_before=stale_before)
    try:
        dataset = await run_in_threadpool(
            _ingest,
            session=session,
            settings=settings,
            store=store,
            upload=upload,
            principal=principal,
        )
    except BaseException as error:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(
                _after_failure,
                session=session,
                store=store,
                upload_id=upload_id,
                principal=principal,
                error=error,
            )
        raise
    await run_in_threadpool(resumable.discard_chunks, store, upload_id)
    return DatasetPublic.model_validate(dataset)


def _claim(*, session: Session, upload: Upload, stale_before: datetime) -> None:
    resumable.claim_for_completion(session=session, upload=upload, stale_before=stale_before)
    session.commit()


def _ingest(
    *,
    session: Session,
    settings: Settings,
    store: ObjectStore,
    upload: Upload,
    principal: Principal,
) -> Any:
    chunks = resumable.parts(session, upload.id)
    received = resumable.assemble(
        store=store, upload=upload, chunks=chunks, data_dir=settings.data_dir
    )
    dataset = service.create(
        session=session,
        settings=settings,
        store=store,
        dataset_id=upload.id,
        upload=received,
        principal=principal,
    )
    resumable.finish(session=session, upload_id=upload.id)
    session.commit()
    return dataset


def _after_failure(
    *,
    session: Session,
    store: ObjectStore,
    upload_id: str,
    principal: Principal,
    error: BaseException,
) -> None:
    """A zip the server refuses (a 4xx) cannot become a dataset by sending it again: the upload
    goes, with its reservation and chunks. Any other failure leaves it to be completed again."""
    refusal = error if isinstance(error, ClientError) else None
    if refusal is None:
        session.rollback()
    else:
        service.release_reservation(
            session=session, principal=principal, dataset_id=upload_id, refusal=refusal
        )
    # A refused upload's chunks go first; until they have, its row stays (to be completed
    # again, or removed by the janitor once it expires) so that no chunk is left unowned.
    gone = refusal is not None and resumable.discard_chunks(store, upload_id)
    try:
        if gone:
            resumable.forget(session=session, upload_id=upload_id)
        else:
            resumable.back_to_receiving(session=session, upload_id=upload_id)
        session.commit()
    except Exception:
        logger.exception("upload %s: its state after a failed completion was not saved", upload_id)


@router.delete("/uploads/{upload_id}", status_code=204)
def abandon_upload(upload: UploadDep, session: SessionDep, request: Request) -> None:
    """Give an upload up: its chunks and its reservation go (a completed one's dataset stays)."""
    if upload.status == resumable.COMPLETING:
        raise Conflict(f"upload {upload.id} is being completed; wait for that to end")
    # A store that does not answer is a 503 and changes nothing.
    resumable.remove(session=session, store=request.app.state.object_store, upload_id=upload.id)
    session.commit()
    # Its staging folder is left alone: a chunk may be arriving on this host, and its request
    # removes its own file (then finds the upload gone and answers 404).
