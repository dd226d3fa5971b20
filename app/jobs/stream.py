"""`GET /jobs/{id}/events/stream`: a job's events and progress as server-sent events.

Each event of the job's log goes out once, with its id as the SSE id, so a client that
reconnects with `Last-Event-ID` gets exactly what it missed; progress goes out as `progress`
messages whenever it changes. The stream polls the database in short sessions of its own
(about once a second) and holds no connection in between, so open streams do not use up the
pool. It ends once the job has finished and its last event is sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.db import session_scope
from app.jobs.lifecycle import FINISHED
from app.orm import Job, JobEvent

POLL_SECONDS = 1.0
KEEP_ALIVE_SECONDS = 15.0
EVENTS_PER_POLL = 500


@dataclass
class Snapshot:
    status: str
    progress: dict[str, Any]
    metrics: dict[str, Any]
    events: list[dict[str, Any]]


def read_since(settings: Settings, job_id: str, after_id: int) -> Snapshot | None:
    """The job's state and its events after `after_id`, in one short session."""
    with session_scope(settings.resolved_database_url, settings.database_pool) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        events = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
            .order_by(JobEvent.id)
            .limit(EVENTS_PER_POLL)
        ).all()
        return Snapshot(
            status=job.status,
            progress=dict(job.progress or {}),
            metrics=dict(job.metrics or {}),
            events=[
                {
                    "id": event.id,
                    "created_at": event.created_at.isoformat(),
                    "type": event.type,
                    "message": event.message,
                    "data": event.data,
                }
                for event in events
            ],
        )


def sse(data: dict[str, Any], *, event: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def job_stream(
    settings: Settings, job_id: str, after_id: int, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[str]:
    last_progress: dict[str, Any] | None = None
    last_sent = time.monotonic()
    while True:
        snapshot = await run_in_threadpool(read_since, settings, job_id, after_id)
        if snapshot is None:  # deleted while streamed
            return
        for event in snapshot.events:
            after_id = event["id"]
            yield sse(event, event="job_event", event_id=after_id)
            last_sent = time.monotonic()
        if snapshot.progress != last_progress:
            last_progress = snapshot.progress
            yield sse(
                {
                    "status": snapshot.status,
                    "progress": snapshot.progress,
                    "metrics": snapshot.metrics,
                },
                event="progress",
            )
            last_sent = time.monotonic()
        if snapshot.status in FINISHED and len(snapshot.events) < EVENTS_PER_POLL:
            yield sse({"status": snapshot.status}, event="end")
            return
        if time.monotonic() - last_sent >= KEEP_ALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)
