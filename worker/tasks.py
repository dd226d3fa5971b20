"""Celery tasks: thin wrappers that parse ids and call the job runner."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from worker import job_runner, shutdown
from worker.celery_app import celery_app

# Retried: the database or broker briefly unreachable. Anything else is the job's own failure,
# which the runner records on the job row instead of raising.
TRANSIENT_ERRORS = (OperationalError, RedisConnectionError)


@celery_app.task(
    name="worker.train",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=5,
)
def train(job_id: str) -> None:
    with shutdown.sigterm_gives_way():
        job_runner.run(str(job_id))
