"""The lifecycle's statuses are the database's, and a change whose fence moved writes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.db import session_scope
from app.jobs import lifecycle
from app.jobs.lifecycle import JobStatus
from app.orm import JobEvent
from app.orm.base import utcnow
from app.orm.tables import JOB_STATUSES
from tests.api.jobs import create_job


def test_the_typed_statuses_are_exactly_those_the_database_allows() -> None:
    assert set(JobStatus) == set(JOB_STATUSES)


def events_of(settings: Settings, job_id: str) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return int(session.scalar(select(func.count()).where(JobEvent.job_id == job_id)) or 0)


def test_each_change_holds_only_from_its_own_status_and_lease(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = create_job(client, ready_dataset)["id"]
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        # Not running yet: nothing a running attempt may do holds.
        assert not lifecycle.fail(session, job_id, owner="a", now=now, error="x")
        assert not lifecycle.request_cancel(session, job_id)
        claimed = lifecycle.claim(session, job_id, owner="a", now=now)
        assert claimed is not None and claimed.attempt == 1
        assert lifecycle.claim(session, job_id, owner="b", now=now) is None
        # Another attempt's lease does not end the job; its own does, once.
        assert not lifecycle.end_cancelled(session, job_id, owner="b", now=now)
    before = events_of(settings, job_id)
    with session_scope(settings.resolved_database_url) as session:
        assert lifecycle.fail(session, job_id, owner="a", now=now, error="broke")
        assert not lifecycle.fail(session, job_id, owner="a", now=now, error="again")
    assert events_of(settings, job_id) == before + 1
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"] == "broke"


def test_a_release_holds_only_for_its_own_attempt_without_a_pending_cancel(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    """A worker shutting down gives its job back uncounted; a stale attempt cannot."""
    job_id = create_job(client, ready_dataset)["id"]
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        assert lifecycle.claim(session, job_id, owner="a", now=now) is not None
        assert not lifecycle.release(session, job_id, owner="b", now=now)
        assert lifecycle.release(session, job_id, owner="a", now=now)
        assert not lifecycle.release(session, job_id, owner="a", now=now)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempt"] == 0
    with session_scope(settings.resolved_database_url) as session:
        claimed = lifecycle.claim(session, job_id, owner="c", now=now)
        assert claimed is not None and claimed.attempt == 1
        assert lifecycle.request_cancel(session, job_id)
        # A cancel asked for meanwhile wins: the job would never be claimed again.
        assert not lifecycle.release(session, job_id, owner="c", now=now)


def test_a_lost_rank_requeues_its_own_attempt_counted_until_the_attempts_are_used_up(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = create_job(client, ready_dataset)["id"]
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        for attempt in range(1, settings.job_max_attempts):
            claimed = lifecycle.claim(session, job_id, owner=f"a{attempt}", now=now)
            assert claimed is not None and claimed.attempt == attempt
            assert not lifecycle.requeue_lost_rank(
                session, job_id, owner="other", now=now, reason="rank 1 of 2 was killed"
            )
            assert lifecycle.requeue_lost_rank(
                session, job_id, owner=f"a{attempt}", now=now, reason="rank 1 of 2 was killed"
            )
        # The last attempt is not given back: it fails like any other.
        last = lifecycle.claim(session, job_id, owner="last", now=now)
        assert last is not None and last.attempt == settings.job_max_attempts
        assert not lifecycle.requeue_lost_rank(
            session, job_id, owner="last", now=now, reason="rank 1 of 2 was killed"
        )
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "running" and job["attempt"] == settings.job_max_attempts
    messages = [e["message"] for e in client.get(f"/jobs/{job_id}/events").json()]
    requeued = "queued again: rank 1 of 2 was killed (the next attempt resumes from the last "
    assert sum(m == requeued + "checkpoint)" for m in messages) == settings.job_max_attempts - 1
