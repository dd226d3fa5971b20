"""What a tenant keeps on the data disk, by kind, from sizes recorded where the bytes were
written (never by walking the disk per request).

- datasets: each dataset's stored images and manifest, measured at upload;
- prepared: each dataset's prepared arrays (per input resolution), measured by the worker when
  a job on it ends;
- models: each registered model's folder, measured when it is registered;
- checkpoints: each job's checkpoints folder, measured at each checkpoint and when the attempt
  ends, and zeroed when the janitor removes it;
- uploads: what uploads in progress reserved.

Deleting a dataset, job or model removes its row and with it its bytes. Exports are streamed
and store nothing; a job's training log and config (a few KB) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.orm.tables import Dataset, Job, Model, UploadReservation


@dataclass(frozen=True)
class StoredUsage:
    datasets: int
    prepared: int
    models: int
    checkpoints: int
    uploads: int

    @property
    def total(self) -> int:
        return self.datasets + self.prepared + self.models + self.checkpoints + self.uploads

    def summary(self) -> str:
        return (
            f"datasets {self.datasets}, prepared arrays {self.prepared}, models {self.models}, "
            f"checkpoints {self.checkpoints}, uploads in progress {self.uploads}"
        )


def stored_usage(
    *,
    session: Session,
    tenant: str,
    reservations_since: datetime,
    excluding_reservation: str | None = None,
) -> StoredUsage:
    """The tenant's recorded bytes by kind; reservations older than `reservations_since` (left
    by dead uploads) and `excluding_reservation`'s do not count."""
    datasets, prepared = session.execute(
        select(
            func.coalesce(func.sum(Dataset.stored_bytes), 0),
            func.coalesce(func.sum(Dataset.prepared_bytes), 0),
        ).where(Dataset.tenant == tenant)
    ).one()
    models = session.scalar(
        select(func.coalesce(func.sum(Model.stored_bytes), 0)).where(Model.tenant == tenant)
    )
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Job.checkpoint_bytes), 0)).where(Job.tenant == tenant)
    )
    uploads = session.scalar(
        select(func.coalesce(func.sum(UploadReservation.reserved_bytes), 0)).where(
            UploadReservation.tenant == tenant,
            UploadReservation.created_at >= reservations_since,
            UploadReservation.id != (excluding_reservation or ""),
        )
    )
    return StoredUsage(
        datasets=int(datasets),
        prepared=int(prepared),
        models=int(models or 0),
        checkpoints=int(checkpoints or 0),
        uploads=int(uploads or 0),
    )
