"""The reconciler brings back jobs whose worker died and re-sends jobs whose message was lost."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.queue import UNACKED_HASH, send_train_task, train_job_id, waiting_job_ids
from app.jobs.reconcile import reconcile_once
from app.main import create_app
from app.orm.base import utcnow
from tests.api.jobs import create_job, queued_job_ids, set_status

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


def test_running_job_with_stale_heartbeat_is_requeued_and_resent(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds + 5)
    set_status(
        settings, job["id"], status="running", attempt=1, heartbeat_at=stale, lease_owner="x"
    )
    report = reconcile_once(settings)
    assert job["id"] in report.requeued
    body = client.get(f"/jobs/{job['id']}").json()
    assert body["status"] == "queued" and body["attempt"] == 1
    assert queued_job_ids(str(settings.redis_url), settings.train_queue).count(job["id"]) == 2
    events = client.get(f"/jobs/{job['id']}/events").json()
    assert events[-1]["message"].startswith("worker silent for")


def test_fresh_heartbeat_is_left_alone(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    set_status(settings, job["id"], status="running", attempt=1, heartbeat_at=utcnow())
    report = reconcile_once(settings)
    assert job["id"] not in report.requeued + report.failed
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "running"


def test_stale_job_out_of_attempts_fails_with_a_clear_error(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds + 5)
    set_status(settings, job["id"], status="running", attempt=3, max_attempts=3, heartbeat_at=stale)
    reconcile_once(settings)
    body = client.get(f"/jobs/{job['id']}").json()
    assert body["status"] == "failed"
    assert body["error"].startswith("worker lost: no heartbeat for")
    assert "attempt 3 of 3" in body["error"]


def test_stale_job_with_a_cancel_request_ends_cancelled(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    stale = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds + 5)
    set_status(settings, job["id"], status="running", attempt=1, heartbeat_at=stale)
    client.post(f"/jobs/{job['id']}/cancel")
    reconcile_once(settings)
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "cancelled"


def drop_message(settings: Settings, job_id: str) -> None:
    """Lose a job's message, as a broker restart without persistence would."""
    client = redis.Redis.from_url(str(settings.redis_url))
    for raw in client.lrange(settings.train_queue, 0, -1):
        if train_job_id(json.loads(raw)) == job_id:
            client.lrem(settings.train_queue, 0, raw)


def test_a_queued_job_whose_message_was_lost_is_sent_again_once(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job = create_job(client, ready_dataset)
    drop_message(settings, job["id"])
    waited = utcnow() - timedelta(seconds=settings.queued_resend_after_seconds + 5)
    set_status(settings, job["id"], enqueued_at=waited)
    report = reconcile_once(settings)
    assert job["id"] in report.resend
    assert queued_job_ids(str(settings.redis_url), settings.train_queue).count(job["id"]) == 1
    # Sent once, not again on the next pass.
    assert job["id"] not in reconcile_once(settings).resend


def test_a_queued_job_still_waiting_in_the_broker_is_not_sent_again(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    """Many jobs queued behind busy workers: no copy of each per interval."""
    jobs = [create_job(client, ready_dataset) for _ in range(3)]
    waited = utcnow() - timedelta(seconds=settings.queued_resend_after_seconds + 5)
    for job in jobs:
        set_status(settings, job["id"], enqueued_at=waited)
    drop_message(settings, jobs[1]["id"])
    report = reconcile_once(settings)
    assert [job["id"] for job in jobs if job["id"] in report.resend] == [jobs[1]["id"]]
    in_queue = queued_job_ids(str(settings.redis_url), settings.train_queue)
    assert [in_queue.count(job["id"]) for job in jobs] == [1, 1, 1]


def test_a_message_a_worker_holds_unacknowledged_counts_as_in_the_broker(
    settings: Settings,
) -> None:
    client = redis.Redis.from_url(str(settings.redis_url))
    queue = f"reconcile-probe-{uuid.uuid4().hex[:8]}"
    send_train_task(broker_url=str(settings.redis_url), queue=queue, job_id="job-in-the-list")
    send_train_task(broker_url=str(settings.redis_url), queue=queue, job_id="job-taken")
    taken = client.rpop(queue)
    assert taken is not None
    tag = f"probe-{uuid.uuid4().hex[:8]}"
    client.hset(UNACKED_HASH, tag, json.dumps([json.loads(taken), "", queue]))
    try:
        ids = waiting_job_ids(broker_url=str(settings.redis_url), queue=queue)
        assert {"job-in-the-list", "job-taken"} <= ids
    finally:
        client.hdel(UNACKED_HASH, tag)
        client.delete(queue)


def test_the_api_runs_the_reconciler_in_the_background(
    settings: Settings, ready_dataset: str
) -> None:
    own = settings.model_copy(update={"reconcile_interval_seconds": 0.1})
    with TestClient(create_app(own)) as client:
        job = create_job(client, ready_dataset)
        stale = utcnow() - timedelta(seconds=own.heartbeat_timeout_seconds + 5)
        set_status(own, job["id"], status="running", attempt=1, heartbeat_at=stale)
        deadline = time.monotonic() + 10
        while client.get(f"/jobs/{job['id']}").json()["status"] != "queued":
            assert time.monotonic() < deadline, "the background reconciler never ran"
            time.sleep(0.05)
