"""The producer side of the queue: the api sends tasks by name and never imports the worker."""

from __future__ import annotations

import base64
import contextlib
import json
from functools import lru_cache
from typing import Any

import redis
from celery import Celery

TRAIN_TASK_NAME = "worker.train"
# Where kombu's Redis transport keeps messages a worker has taken but not acknowledged.
UNACKED_HASH = "unacked"


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


def waiting_job_ids(*, broker_url: str, queue: str) -> set[str]:
    """The job ids of the train messages in the broker: waiting in the queue's Redis list, or
    taken by a worker and not yet acknowledged (kombu's `unacked` hash).

    The reconciler re-sends a queued job only when no message for it is here, so a long queue
    behind busy workers does not grow by a copy of every job each interval. Raises
    `redis.RedisError` when the broker does not answer.
    """
    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=3)
    messages: list[Any] = []
    for raw in client.lrange(queue, 0, -1):
        with contextlib.suppress(ValueError):
            messages.append(json.loads(raw))
    for entry in client.hvals(UNACKED_HASH):
        # Each entry is [message, exchange, routing key].
        with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
            messages.append(json.loads(entry)[0])
    ids = set()
    for message in messages:
        job_id = train_job_id(message)
        if job_id is not None:
            ids.add(job_id)
    return ids


def train_job_id(message: Any) -> str | None:
    """The job id in a parsed Celery (protocol 2, JSON) message for the train task, else None."""
    try:
        if message["headers"]["task"] != TRAIN_TASK_NAME:
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
