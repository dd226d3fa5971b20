"""The database's truth about datasets, jobs, their events and checkpoints, and trained models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, UTCDateTime, utcnow

# The tenant of everything made while authentication is off, and of rows older than tenants.
DEFAULT_TENANT = "default"


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The tenant of the API key that created it; other tenants' keys never see it.
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    num_images: Mapped[int] = mapped_column(Integer, default=0)
    # The uploaded archive's size.
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # What the dataset keeps on disk (its stored images and manifest), counted against the
    # tenant's upload quota.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Its prepared arrays (one per input resolution, under its folder), measured by the worker
    # when a job on it ends; counted against the tenant's stored-bytes quota.
    prepared_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    num_train: Mapped[int] = mapped_column(Integer, default=0)
    num_val: Mapped[int] = mapped_column(Integer, default=0)
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UploadReservation(Base):
    """Quota bytes held for an upload in progress, from before its body is read until it is
    stored (its dataset row then counts instead) or refused."""

    __tablename__ = "upload_reservation"

    # The id the dataset will have.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    reserved_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


UPLOAD_STATUSES = ("receiving", "completing", "completed")


class Upload(Base):
    """A resumable upload of a dataset's zip: its chunks arrive in order, each stored as an
    object (so any api host can take the next one), and `POST /uploads/{id}/complete` turns
    them into the dataset of the same id."""

    __tablename__ = "upload"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in UPLOAD_STATUSES)),
            name="upload_status_known",
        ),
        CheckConstraint("received <= size", name="upload_received_within_size"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    filename: Mapped[str | None] = mapped_column(String(200), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    # The bytes stored so far; the next chunk must start here.
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(20), default="receiving")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last chunk's time: an upload idle for `upload_expiry_seconds` is removed.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UploadPart(Base):
    """One stored chunk of an upload. A row exists only for a chunk whose object is whole and
    that moved `upload.received` on: the same transaction does both."""

    __tablename__ = "upload_part"

    upload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("upload.id", ondelete="CASCADE"), primary_key=True
    )
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class Job(Base):
    __tablename__ = "job"
    # The database itself refuses a status no code path should ever write.
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in JOB_STATUSES)),
            name="status",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The tenant of the API key that created it; other tenants' keys never see it.
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), index=True)
    control_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), nullable=True)
    base_model: Mapped[str] = mapped_column(String(300))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The training loss by step, thinned to a bounded size (app/jobs/loss_curve.py).
    loss_curve: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the job gained and lost, written once it succeeds (`GET /jobs/{id}/report`).
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Not a foreign key: model rows point at their job, and a cycle of keys buys nothing here.
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # What its checkpoints folder keeps on disk: measured by the worker at each checkpoint and
    # when the attempt ends, zeroed when the janitor removes the folder.
    checkpoint_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    type: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Checkpoint(Base):
    __tablename__ = "checkpoint"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    metric_name: Mapped[str | None] = mapped_column(String(40), nullable=True)
    metric_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Model(Base):
    __tablename__ = "model"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The tenant of the API key that created it; other tenants' keys never see it.
    tenant: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    prompt_template: Mapped[str] = mapped_column(String(200))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(String(500))
    # What its folder keeps on disk, measured once when it is registered.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key: only a hash of its secret is stored; the key itself is shown once."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Webhook(Base):
    """A URL that is sent the tenant's events (or, with `job_id`, that one job's), signed with
    its secret."""

    __tablename__ = "webhook"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # The event types it is sent (app/webhooks/event_types.py).
    events: Mapped[list[str]] = mapped_column(JSON)
    # The HMAC key of its signatures: kept as is, since signing needs it; shown once.
    secret: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(200), default="")
    # Set for a webhook given on `POST /jobs`: it hears only that job, and goes with it.
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("job.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


WEBHOOK_DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed")


class WebhookDelivery(Base):
    """The outbox: one event for one webhook, written in the transaction of the change that
    caused it, and sent by `clipft webhooks` until the receiver accepts it or time runs out."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(
                ", ".join(f"'{status}'" for status in WEBHOOK_DELIVERY_STATUSES)
            ),
            name="status",
        ),
        # What a sender's claim looks for.
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
    )

    # The body's `id`: the same on every attempt, so a receiver can drop a repeat.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhook.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(40))
    # The job or dataset the event is about, and how `GET` showed it then.
    subject_id: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The sender holding it while an attempt is under way, and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One try at a delivery: when, the receiver's status code, or why there was none."""

    __tablename__ = "webhook_attempt"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
