"""A job's statuses (the database's CHECK allows exactly these) and the sets the lifecycle uses.

Apart from app/jobs/lifecycle.py, which changes them, so that the job's public shape
(app/jobs/schemas.py) can name them and the lifecycle can show the job as `GET` does when it
announces an end to webhooks.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
