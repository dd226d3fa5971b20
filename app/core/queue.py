"""The producer side of the queue: the api sends tasks by name and never imports the worker."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

TRAIN_TASK_NAME = "worker.train"


@lru_cache(maxsize=8)
def producer(broker_url: str) -> Celery:
    app = Celery("clipft-producer", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Fail fast when the broker is down: the job row is already committed, and the
        # reconciler sends it again once the broker is back.
        broker_connection_timeout=3,
        broker_transport_options={"max_retries": 1, "socket_timeout": 5},
    )
    return app


def send_train_task(*, broker_url: str, queue: str, job_id: str) -> None:
    producer(broker_url).send_task(TRAIN_TASK_NAME, args=[job_id], queue=queue)
