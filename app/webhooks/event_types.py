"""The events a webhook can be sent: a job that ended, a dataset upload that ended."""

from __future__ import annotations

from enum import StrEnum


class WebhookEvent(StrEnum):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    DATASET_READY = "dataset.ready"
    DATASET_FAILED = "dataset.failed"


# What a webhook given on `POST /jobs` may hear: the job is its only subject.
JOB_EVENTS = tuple(event for event in WebhookEvent if event.startswith("job."))
