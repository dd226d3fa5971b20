"""Celery configured for long training jobs: one at a time, acknowledged only when done."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from app.core.config import Settings, get_settings
from worker import shutdown
from worker.liveness import Liveness
from worker.local_copies import sweep_local_copies


def create_celery(settings: Settings) -> Celery:
    app = Celery("clipft", broker=settings.redis_url, include=["worker.tasks"])
    app.conf.update(
        # A job is acknowledged when it finishes, and given back if its process dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Take one job at a time: a prefetched second job would wait behind hours of training.
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=settings.train_queue,
        broker_connection_retry_on_startup=True,
        # Redis redelivers unacknowledged messages after this; it must outlast any job.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_seconds},
        # A broker blip must not kill training: the run goes on and records its result; a
        # redelivery after the reconnect finds the job no longer queued and does nothing.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # A broker that refuses writes (MISCONF: the disk under its files is full) raises a
        # channel error, which Celery otherwise takes for unrecoverable and exits on; retried
        # like a lost connection, the worker takes jobs again once the broker does writes.
        broker_channel_error_retry=True,
        worker_hijack_root_logger=False,
    )
    return app


celery_app = create_celery(get_settings())
# SIGTERM puts a running job back in the queue at its next step instead of waiting for its end.
worker_shutting_down.connect(shutdown.on_worker_shutting_down, weak=False)
celery_app.steps["consumer"].add(Liveness)


def sweep_on_start(**_: Any) -> None:
    """Free what a worker that died on this host left of ended jobs, off the consumer's thread."""
    threading.Thread(
        target=sweep_local_copies, args=(get_settings(),), name="local-copies", daemon=True
    ).start()


worker_ready.connect(sweep_on_start, weak=False)
