"""Every type a job's event log holds (`GET /jobs/{id}/events`), in one enum that the api, the
worker and the training run all write with.

A module of its own, importing nothing: the training library, which may not import the
database, names its notices with it too.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    STATUS = "status"
    CANCEL_REQUESTED = "cancel_requested"
    RETRY = "retry"
    # From the worker, about the attempt it supervises.
    PROCESS = "process"
    EVALUATION = "evaluation"
    CHECKPOINT = "checkpoint"
    # Notices from the training run.
    RESUME = "resume"
    CHECKPOINT_UNUSABLE = "checkpoint_unusable"
    PHASE = "phase"
    EARLY_STOP = "early_stop"
    WISE_FT = "wise_ft"
