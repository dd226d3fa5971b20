"""Datasets: turn an uploaded zip into a ready dataset, and look datasets up."""

from __future__ import annotations

import logging
import shutil
from pathlib import PurePosixPath, PureWindowsPath

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.auth.quotas import release_upload, settle_upload
from app.core.config import Settings
from app.core.errors import ClientError, Conflict, Unprocessable
from app.core.objects.folders import delete_folder, publish_folder
from app.core.objects.store import ObjectStore, ObjectStoreError
from app.core.principal import Principal
from app.core.queries import get_or_404, newest_first_page
from app.core.storage import dataset_object_folder, folder_bytes
from app.datasets.ingest import ingest_archive
from app.datasets.schemas import DatasetPublic
from app.datasets.upload import FILE_FIELD, ReceivedUpload
from app.ml.manifest import Manifest
from app.orm.base import utcnow
from app.orm.tables import DEFAULT_TENANT, Dataset, Job
from app.webhooks.event_types import WebhookEvent
from app.webhooks.outbox import record_event
from app.webhooks.signing import iso_time

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 200  # the width of `dataset.name`
DEFAULT_NAME = "dataset"
# A 409 for a dataset in use names at most this many of the jobs using it.
MAX_NAMED_JOBS = 5


def create(
    *,
    session: Session,
    settings: Settings,
    store: ObjectStore,
    dataset_id: str,
    upload: ReceivedUpload,
    principal: Principal,
) -> Dataset:
    """Check, normalise and split an uploaded zip, publish its folder to the object store (a
    worker on another machine trains from there), then record it as a ready dataset whose
    stored files, not its zip, count against the tenant's upload quota."""
    published = dataset_object_folder(dataset_id)
    try:
        name = dataset_name(upload)
        manifest = ingest_archive(
            archive_path=upload.path,
            archive_name=_archive_name(upload.filename),
            dataset_dir=upload.folder,
            settings=settings,
        )
        upload_bytes = upload.path.stat().st_size
        upload.path.unlink()
        stored_bytes = folder_bytes(upload.folder)
        # Before the row: a ready dataset is always in the store, whole (manifest last).
        publish_folder(store, upload.folder, published)
        settle_upload(
            session=session,
            settings=settings,
            principal=principal,
            dataset_id=dataset_id,
            stored_bytes=stored_bytes,
        )
        dataset = dataset_row(
            dataset_id=dataset_id, name=name, manifest=manifest, tenant=principal.tenant
        )
        dataset.upload_bytes = upload_bytes
        dataset.stored_bytes = stored_bytes
        session.add(dataset)
        session.flush()
        record_event(
            session,
            tenant=dataset.tenant,
            type=WebhookEvent.DATASET_READY,
            subject_id=dataset.id,
            data=DatasetPublic.model_validate(dataset).model_dump(mode="json"),
        )
    except BaseException:
        # A rejected upload leaves nothing behind: no folder, no objects and (by the rollback)
        # no row.
        shutil.rmtree(upload.folder, ignore_errors=True)
        unpublish_dataset(store, dataset_id)
        raise
    return dataset


def unpublish_dataset(store: ObjectStore, dataset_id: str) -> None:
    """Remove the dataset's objects; a store that does not answer leaves them to an operator
    (without a row nothing reads them)."""
    try:
        delete_folder(store, dataset_object_folder(dataset_id))
    except ObjectStoreError:
        logger.exception("dataset %s: its published folder could not be removed", dataset_id)


def release_reservation(
    *, session: Session, principal: Principal, dataset_id: str, refusal: ClientError | None
) -> None:
    """A refused or failed upload frees what it reserved; a refused one (a 4xx) is announced
    to the tenant's webhooks as `dataset.failed`."""
    try:
        session.rollback()
        release_upload(session=session, dataset_id=dataset_id)
        if refusal is not None:
            record_refused_upload(
                session=session, principal=principal, dataset_id=dataset_id, refusal=refusal
            )
        session.commit()
    except Exception:
        # The request's own error is the one to answer; a reservation left behind stops
        # counting after CLIPFT_ORPHAN_UPLOAD_GRACE_SECONDS.
        logger.exception("upload %s: its quota reservation was not released", dataset_id)


def record_refused_upload(
    *, session: Session, principal: Principal, dataset_id: str, refusal: ClientError
) -> None:
    """A `dataset.failed` event for an upload refused with a 4xx: no row was kept, so the event
    carries the dataset's id and the refusal the client was answered with."""
    body = refusal.body()
    record_event(
        session,
        tenant=principal.tenant,
        type=WebhookEvent.DATASET_FAILED,
        subject_id=dataset_id,
        data={
            "id": dataset_id,
            "status": "failed",
            "status_code": refusal.status_code,
            "detail": body["detail"],
            "errors": body.get("errors", []),
            "created_at": iso_time(utcnow()),
        },
    )


def dataset_row(
    *,
    dataset_id: str,
    name: str,
    manifest: Manifest,
    status: str = "ready",
    tenant: str = DEFAULT_TENANT,
) -> Dataset:
    """The database row describing a dataset folder's manifest."""
    return Dataset(
        id=dataset_id,
        tenant=tenant,
        name=name,
        status=status,
        kind=manifest.kind,
        num_images=len(manifest.items),
        num_train=len(manifest.split("train")),
        num_val=len(manifest.split("val")),
        classes=manifest.classes,
        errors=[],
    )


def dataset_name(upload: ReceivedUpload) -> str:
    """The `name` field, or else the uploaded file's name without `.zip`."""
    given = upload.fields.get("name", "").strip()
    if len(given) > MAX_NAME_CHARS:
        raise Unprocessable(f"name: at most {MAX_NAME_CHARS} characters")
    if given:
        return given
    stem = _base_filename(upload.filename)
    if stem.lower().endswith(".zip"):
        stem = stem[: -len(".zip")]
    return stem.strip()[:MAX_NAME_CHARS] or DEFAULT_NAME


def _archive_name(filename: str | None) -> str:
    """How error messages name the whole upload."""
    return _base_filename(filename) or FILE_FIELD


def _base_filename(filename: str | None) -> str:
    # Some clients send a full local path; only its last part names the file.
    return PureWindowsPath(PurePosixPath(filename or "").name).name


def get(*, session: Session, dataset_id: str, principal: Principal) -> Dataset:
    """The dataset with this id, or a 404."""
    return get_or_404(session, Dataset, dataset_id, "dataset", principal=principal)


def list_datasets(
    *, session: Session, principal: Principal, limit: int, offset: int
) -> tuple[list[Dataset], int]:
    """One page of datasets, newest first, and how many there are in all."""
    return newest_first_page(
        session, select(Dataset), Dataset, principal=principal, limit=limit, offset=offset
    )


def delete(*, session: Session, dataset: Dataset) -> None:
    """Remove the dataset's row; the caller commits, then removes its folder. A dataset that
    jobs train on or measure against stays until those jobs are deleted (409 naming them)."""
    users = session.scalars(
        select(Job.id)
        .where(or_(Job.dataset_id == dataset.id, Job.control_dataset_id == dataset.id))
        .order_by(Job.created_at)
        .limit(MAX_NAMED_JOBS + 1)
    ).all()
    if users:
        named = ", ".join(users[:MAX_NAMED_JOBS]) + (", …" if len(users) > MAX_NAMED_JOBS else "")
        raise Conflict(f"dataset {dataset.id} is used by job(s) {named}: delete them first")
    dataset_id = dataset.id
    session.delete(dataset)
    try:
        session.flush()
    except IntegrityError:
        # A job created since the check above, and committed before this delete ran.
        raise Conflict(
            f"dataset {dataset_id} is used by a job created meanwhile: delete that job first"
        ) from None
