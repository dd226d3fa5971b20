"""Resumable uploads: a dataset's zip sent as chunks, in order, over as many requests as it takes.

A client that loses its connection asks `GET /uploads/{id}` how far the server got and sends the
rest from there. Each chunk is stored as an object of its own before it counts, so the next
chunk may go to any api host and a host that dies loses nothing that was acknowledged. The
upload's row says how many bytes are stored; a chunk moves it on only if it starts exactly
there (a compare-and-set), so a chunk sent twice, or two clients racing, never leaves a gap or
an overlap. Completing it assembles the chunks and ingests the zip exactly as `POST /datasets`
does, into the dataset of the upload's id.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.auth.quotas import release_upload
from app.core.errors import Conflict, NotFound, PayloadTooLarge
from app.core.objects.store import ObjectStore, ObjectStoreError
from app.core.principal import Principal
from app.core.queries import get_or_404
from app.core.storage import dataset_dir, new_id
from app.datasets.upload import UPLOAD_FILE_NAME, ReceivedUpload
from app.orm.base import utcnow
from app.orm.tables import Upload, UploadPart

logger = logging.getLogger(__name__)

RECEIVING, COMPLETING, COMPLETED = "receiving", "completing", "completed"
MAX_FILENAME_CHARS = 200


def object_prefix(upload_id: str) -> str:
    """Where an upload's chunks lie in the object store."""
    return f"uploads/{upload_id}/"


def staging_dir(data_dir: Path, upload_id: str) -> Path:
    """Where a chunk is written on this host before it is stored (removed once it is)."""
    return data_dir / "uploads" / upload_id


def create(
    *,
    session: Session,
    principal: Principal,
    size: int,
    max_bytes: int,
    name: str | None,
    filename: str | None,
) -> Upload:
    """A new, empty upload of `size` bytes (413 over the size limit; the name's length is
    checked by `UploadCreate`)."""
    if size > max_bytes:
        raise PayloadTooLarge(f"size: {size} bytes is over the upload limit of {max_bytes}")
    upload = Upload(
        id=new_id(),
        tenant=principal.tenant,
        name=name,
        filename=(filename or None) and filename[-MAX_FILENAME_CHARS:],
        size=size,
        received=0,
        status=RECEIVING,
    )
    session.add(upload)
    session.flush()
    return upload


def get(*, session: Session, upload_id: str, principal: Principal) -> Upload:
    """The upload with this id, or a 404 (also for another tenant's)."""
    return get_or_404(session, Upload, upload_id, "upload", principal=principal)


def reread(session: Session, upload_id: str) -> Upload:
    """The upload as the database has it now; a 404 once it was deleted (by a concurrent
    DELETE, or the janitor)."""
    upload = session.get(Upload, upload_id, populate_existing=True)
    if upload is None:
        raise NotFound(f"upload {upload_id} not found")
    return upload


def require_next_offset(upload: Upload, offset: int) -> None:
    """409 unless a chunk at `offset` is the one this upload waits for."""
    if upload.status != RECEIVING:
        raise Conflict(f"upload {upload.id} is {upload.status}; it takes no more chunks")
    if offset != upload.received:
        raise Conflict(
            f"upload {upload.id} has {upload.received} of {upload.size} bytes; send the chunk "
            f"that starts there (Upload-Offset: {upload.received})"
        )


def record_chunk(
    *, session: Session, upload: Upload, offset: int, length: int, key: str, sha256: str
) -> bool:
    """Count a stored chunk, if the upload still waits for one at `offset`: False when another
    request got there first (the caller then removes its object)."""
    moved = session.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.received == offset, Upload.status == RECEIVING)
        .values(received=offset + length, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        UploadPart(upload_id=upload.id, offset=offset, length=length, key=key, sha256=sha256)
    )
    return True


def chunk_key(upload_id: str, offset: int) -> str:
    # A key of its own for every request: a losing duplicate of a chunk never overwrites the
    # object of the one that counted.
    return f"{object_prefix(upload_id)}{offset:020d}-{new_id()}"


def claim_for_completion(*, session: Session, upload: Upload, stale_before: datetime) -> None:
    """Mark the upload as being completed (409 if it is not whole, or already taken). A
    completion that has not moved since `stale_before` died with its api process: it is
    taken over."""
    stale = upload.status == COMPLETING and upload.updated_at < stale_before
    if upload.status != RECEIVING and not stale:
        raise Conflict(f"upload {upload.id} is {upload.status}")
    if upload.received != upload.size:
        raise Conflict(
            f"upload {upload.id} has {upload.received} of {upload.size} bytes; send the rest "
            f"(Upload-Offset: {upload.received}) before completing it"
        )
    claimed = session.execute(
        update(Upload)
        .where(Upload.id == upload.id, Upload.status == upload.status)
        .where(Upload.updated_at == upload.updated_at)
        .values(status=COMPLETING, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"upload {upload.id} is already being completed")


def parts(session: Session, upload_id: str) -> list[UploadPart]:
    return list(
        session.scalars(
            select(UploadPart).where(UploadPart.upload_id == upload_id).order_by(UploadPart.offset)
        )
    )


def assemble(
    *, store: ObjectStore, upload: Upload, chunks: list[UploadPart], data_dir: Path
) -> ReceivedUpload:
    """The chunks, in order, as one zip in the folder of the dataset-to-be."""
    folder = dataset_dir(data_dir, upload.id)
    # What a completion that died here left (this one holds the claim now).
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    target = folder / UPLOAD_FILE_NAME
    try:
        with target.open("wb") as out:
            for piece in _downloaded(store, chunks, folder):
                with piece.open("rb") as source:
                    shutil.copyfileobj(source, out, 1024**2)
                piece.unlink()
        if target.stat().st_size != upload.size:  # the rows promise it; a store could lie
            raise Conflict(f"upload {upload.id}: its stored chunks do not add up to its size")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    fields = {"name": upload.name} if upload.name else {}
    return ReceivedUpload(folder=folder, path=target, filename=upload.filename, fields=fields)


def _downloaded(store: ObjectStore, chunks: list[UploadPart], folder: Path) -> Iterator[Path]:
    expected = 0
    for chunk in chunks:
        if chunk.offset != expected:
            raise Conflict(f"upload {chunk.upload_id}: a chunk is missing at byte {expected}")
        piece = folder / f".chunk-{chunk.offset}"
        info = store.download_to(chunk.key, piece)
        if info.size != chunk.length or info.sha256 != chunk.sha256:
            raise Conflict(f"upload {chunk.upload_id}: the chunk at byte {chunk.offset} changed")
        expected += chunk.length
        yield piece


def back_to_receiving(*, session: Session, upload_id: str) -> None:
    """A completion that failed on the server's side (the store, the disk) may be tried again."""
    session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.status == COMPLETING)
        .values(status=RECEIVING, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def finish(*, session: Session, upload_id: str) -> None:
    """The dataset exists: the upload keeps its row (so a client that lost the answer can see
    what became of it) but not its chunks' rows."""
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    session.execute(
        update(Upload)
        .where(Upload.id == upload_id)
        .values(status=COMPLETED, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def remove(*, session: Session, store: ObjectStore, upload_id: str) -> None:
    """Remove an upload that will not be completed: its chunks first (raising, and changing
    nothing, when the store does not answer), then its quota reservation and rows."""
    store.delete_prefix(object_prefix(upload_id))
    release_upload(session=session, dataset_id=upload_id)
    forget(session=session, upload_id=upload_id)


def forget(*, session: Session, upload_id: str) -> None:
    """Remove the upload's rows (its chunks' rows go with it)."""
    session.execute(delete(UploadPart).where(UploadPart.upload_id == upload_id))
    session.execute(delete(Upload).where(Upload.id == upload_id))


def discard_chunks(store: ObjectStore, upload_id: str) -> bool:
    """Remove the upload's chunk objects (True when they are gone); a store that does not
    answer leaves them to the janitor, which removes an expired upload's chunks before its row."""
    try:
        store.delete_prefix(object_prefix(upload_id))
    except ObjectStoreError:
        logger.exception("upload %s: its chunks could not be removed yet", upload_id)
        return False
    return True


def idle_since(session: Session, cutoff: datetime) -> list[str]:
    """Uploads whose last change (a chunk, or their completion) is older than `cutoff`."""
    return list(session.scalars(select(Upload.id).where(Upload.updated_at < cutoff)))
