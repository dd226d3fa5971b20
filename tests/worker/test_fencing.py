"""Fenced attempts: once a job is given to a new attempt, the old one writes nothing more.

The scenario the fault hunt found: a worker paused past its heartbeat (SIGSTOP) while the
reconciler requeued its job and the same worker thread claimed it again as attempt 2; when the
first attempt woke up, its writes still passed for the job's owner's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.core.config import Settings
from app.core.db import session_scope
from app.core.storage import checkpoints_dir
from app.jobs.event_types import EventType
from app.orm import Checkpoint, Job, JobEvent
from tests.worker.jobs import new_job
from worker.job_runner import attempt_dir, claim, earlier_attempt_dirs, lease_owner
from worker.reporter import JobReporter
from worker.training.progress import CheckpointInfo, Notice

# Part of the fault suite (`make test-faults`).
pytestmark = pytest.mark.faults


def reporter_for(settings: Settings, job_id: str, owner: str) -> JobReporter:
    return JobReporter(
        database_url=settings.resolved_database_url,
        data_dir=settings.data_dir,
        job_id=job_id,
        owner=owner,
        heartbeat_seconds=60,
    )


def counts(settings: Settings, job_id: str) -> tuple[int, int]:
    with session_scope(settings.resolved_database_url) as session:
        events = session.scalar(select(func.count()).where(JobEvent.job_id == job_id))
        checkpoints = session.scalar(select(func.count()).where(Checkpoint.job_id == job_id))
    return int(events or 0), int(checkpoints or 0)


def test_two_attempts_in_one_worker_thread_hold_different_leases() -> None:
    first, second = lease_owner(), lease_owner()
    assert first != second
    assert first.split("/")[0] == second.split("/")[0]  # same host, process and thread


def test_a_replaced_attempt_writes_nothing_and_is_told_to_stop(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = new_job(client, ready_dataset)
    first_owner, second_owner = lease_owner(), lease_owner()
    assert claim(settings, job_id, first_owner) is not None
    first = reporter_for(settings, job_id, first_owner)
    assert not first.should_stop()

    # The reconciler requeues the job while the first attempt is paused; attempt 2 claims it.
    with session_scope(settings.resolved_database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    assert claim(settings, job_id, second_owner) is not None
    before = counts(settings, job_id)
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        heartbeat, metrics = job.heartbeat_at, dict(job.metrics)

    # The first attempt wakes up and reports: every write is refused.
    path = checkpoints_dir(settings.data_dir, job_id) / "attempt-1" / "epoch-1"
    first.on_evaluation(1, {"val_accuracy": 0.5})
    first.on_checkpoint(CheckpointInfo(1, 6, path, "val_accuracy", 0.5))
    first.on_notice(Notice(EventType.EARLY_STOP, "stale"))
    first.on_process_started(4242)
    assert first.lease_lost.is_set() and first.should_stop()
    assert counts(settings, job_id) == before
    with session_scope(settings.resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.lease_owner == second_owner and job.attempt == 2
        assert job.heartbeat_at == heartbeat and job.metrics == metrics

    # The new attempt's writes go through.
    second = reporter_for(settings, job_id, second_owner)
    second.on_checkpoint(CheckpointInfo(1, 6, path, "val_accuracy", 0.5))
    assert counts(settings, job_id) == (before[0] + 1, before[1] + 1)
    assert not second.should_stop()


def test_each_attempt_checkpoints_in_its_own_folder_and_resumes_from_earlier_ones(
    tmp_path: Path,
) -> None:
    assert attempt_dir(tmp_path, 3) == tmp_path / "attempt-3"
    assert earlier_attempt_dirs(tmp_path, 3) == (
        tmp_path / "attempt-2",
        tmp_path / "attempt-1",
        tmp_path,  # where checkpoints were before attempts had folders
    )


def test_a_database_outage_of_seconds_is_ridden_out(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    import threading
    import time

    import pytest
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    url = make_url(settings.resolved_database_url)
    if not url.drivername.startswith("postgresql"):
        pytest.skip("needs PostgreSQL, whose connections a test can refuse and cut")
    job_id = new_job(client, ready_dataset)
    owner = lease_owner()
    assert claim(settings, job_id, owner) is not None
    reporter = reporter_for(settings, job_id, owner)
    before = counts(settings, job_id)

    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        # The outage: no new connections, and every open one cut.
        connection.execute(sa.text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false'))
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
            {"name": url.database},
        )

    def recover() -> None:
        time.sleep(2)
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true'))

    healer = threading.Thread(target=recover)
    healer.start()
    try:
        path = checkpoints_dir(settings.data_dir, job_id) / "attempt-1" / "epoch-1"
        reporter.on_checkpoint(CheckpointInfo(1, 6, path, "val_accuracy", 0.5))
        assert not reporter.should_stop()
    finally:
        healer.join()
        admin.dispose()
    assert counts(settings, job_id) == (before[0] + 1, before[1] + 1)


def test_a_hung_training_loop_loses_its_heartbeat_and_the_job_goes_back_to_the_queue(
    client: TestClient,
    settings: Settings,
    ready_dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading
    import time

    from app.jobs.reconcile import reconcile_once
    from worker import job_runner
    from worker.training.fault_injection import CRASH_FILE_VARIABLE

    hang_order = tmp_path / "hang"
    hang_order.write_text("HANG")
    monkeypatch.setenv(CRASH_FILE_VARIABLE, str(hang_order))
    quick = settings.model_copy(
        update={
            # Long enough that a slow start (a loaded CI machine) is not taken for the hang.
            "heartbeat_timeout_seconds": 8.0,
            "training_stall_seconds": 5.0,
            "training_stop_grace_seconds": 1.0,
        }
    )
    job_id = new_job(client, ready_dataset)
    attempt = threading.Thread(target=job_runner.run, args=(job_id, quick))
    attempt.start()
    try:
        deadline = time.monotonic() + 120
        # The reconciler only once the run has hung: on a loaded machine a start slower than the
        # stall allowance stops the heartbeat too, and a requeue then would end the attempt
        # before its process ever reached the hang (the PostgreSQL pass under xdist saw that).
        while hang_order.exists():
            assert time.monotonic() < deadline, client.get(f"/jobs/{job_id}").json()
            time.sleep(0.2)
        while client.get(f"/jobs/{job_id}").json()["status"] != "queued":
            assert time.monotonic() < deadline, client.get(f"/jobs/{job_id}").json()
            reconcile_once(quick)
            time.sleep(0.5)
    finally:
        attempt.join(timeout=60)
    assert not attempt.is_alive()  # the replaced attempt stopped its hung process and returned
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "queued" and job["attempt"] == 1 and job["error"] is None
    events = client.get(f"/jobs/{job_id}/events").json()
    assert events[-1]["message"].startswith("worker silent for")
