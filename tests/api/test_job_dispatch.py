"""A queued job's train task goes to the broker once its transaction commits, and never when it
rolls back (app/jobs/dispatch.py, shared by the routes and the reconciler)."""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import session_scope
from app.jobs.dispatch import send_after_commit
from app.main import create_app
from tests.api.jobs import create_job, queued_job_ids


def test_a_task_is_sent_when_its_transaction_commits_not_before(settings: Settings) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    with session_scope(settings.resolved_database_url) as session:
        session.execute(text("SELECT 1"))
        send_after_commit(session, settings, job_id)
        assert job_id not in queued_job_ids(str(settings.redis_url), settings.train_queue)
    assert queued_job_ids(str(settings.redis_url), settings.train_queue).count(job_id) == 1


def test_a_rolled_back_transaction_sends_nothing_even_if_the_session_commits_later(
    settings: Settings,
) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    with session_scope(settings.resolved_database_url) as session:
        send_after_commit(session, settings, job_id)
        session.rollback()
    assert job_id not in queued_job_ids(str(settings.redis_url), settings.train_queue)


def test_without_a_broker_a_created_job_stays_queued_and_no_send_fails(
    settings: Settings, ready_dataset: str, caplog: pytest.LogCaptureFixture
) -> None:
    no_broker = settings.model_copy(update={"redis_url": None})
    with TestClient(create_app(no_broker, run_reconciler=False)) as client:
        with caplog.at_level(logging.WARNING, logger="app.jobs"):
            job = create_job(client, ready_dataset)
        assert client.get(f"/jobs/{job['id']}").json()["status"] == "queued"
    assert [record.levelname for record in caplog.records if record.name.startswith("app")] == [
        "WARNING"
    ]
    assert job["id"] in caplog.records[-1].getMessage()
