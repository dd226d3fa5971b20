"""Jobs for the API tests: made through the API, read off the queue, set behind its back."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.config import Settings
from app.core.db import session_scope
from app.orm import Job


def create_job(client: TestClient, dataset_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataset_id": dataset_id, "base_model": "tiny-clip", **overrides}
    response = client.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def queued_job_ids(redis_url: str, queue: str) -> list[str]:
    """The job ids of the task messages waiting in a Redis queue, as a worker would read them."""
    messages = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    ids = []
    for raw in messages:
        message = json.loads(raw)
        assert message["headers"]["task"] == "worker.train"
        body = json.loads(base64.b64decode(message["body"]))
        ids.append(body[0][0])
    return ids


def set_status(settings: Settings, job_id: str, **values: Any) -> None:
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
