"""Appending to a job's event log, used by the api, the reconciler and the worker alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.jobs.event_types import EventType
from app.orm import JobEvent


def add_event(
    session: Session,
    *,
    job_id: str,
    type: EventType,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, type=type, message=message, data=data or {}))
