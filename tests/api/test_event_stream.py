"""`GET /jobs/{id}/events/stream`: events and progress as server-sent events, resumable."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.config import Settings
from app.core.db import session_scope
from app.jobs import lifecycle
from app.jobs.events import add_event
from app.main import create_app
from app.orm import Job
from app.orm.base import utcnow
from tests.api.jobs import create_job


def read_stream(client: TestClient, job_id: str, **headers: str) -> list[dict[str, Any]]:
    """Every message of the stream until it ends: {"id", "event", "data"}."""
    messages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/jobs/{job_id}/events/stream", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if current:
                    messages.append(current)
                current = {}
            elif line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
    return messages


def run_the_job_meanwhile(settings: Settings, job_id: str) -> threading.Thread:
    def work() -> None:
        time.sleep(0.5)
        with session_scope(settings.resolved_database_url) as session:
            lifecycle.claim(session, job_id, owner="test", now=utcnow())
        time.sleep(0.5)
        with session_scope(settings.resolved_database_url) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(progress={"epoch": 1, "epochs": 2, "step": 3, "fraction": 0.5})
            )
            add_event(
                session, job_id=job_id, type="evaluation", message="epoch 1", data={"epoch": 1}
            )
        time.sleep(0.5)
        with session_scope(settings.resolved_database_url) as session:
            lifecycle.fail(session, job_id, owner="test", now=utcnow(), error="stopped by test")

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_the_stream_sends_each_event_once_and_progress_and_ends_with_the_job(
    client: TestClient, settings: Settings, ready_dataset: str
) -> None:
    job_id = create_job(client, ready_dataset)["id"]
    worker = run_the_job_meanwhile(settings, job_id)
    messages = read_stream(client, job_id)
    worker.join()
    events = [message for message in messages if message["event"] == "job_event"]
    assert [event["data"]["message"] for event in events] == [
        "queued",
        "running (attempt 1 of 3)",
        "epoch 1",
        "stopped by test",
    ]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    progress = [message["data"] for message in messages if message["event"] == "progress"]
    assert any(state["progress"].get("fraction") == 0.5 for state in progress)
    assert messages[-1] == {"event": "end", "data": {"status": "failed"}}

    # A client reconnecting after the second event gets only what followed it.
    resumed = read_stream(client, job_id, **{"Last-Event-ID": str(ids[1])})
    assert [m["id"] for m in resumed if m["event"] == "job_event"] == ids[2:]


def test_a_bad_last_event_id_is_a_422_and_an_unknown_job_a_404(
    client: TestClient, ready_dataset: str
) -> None:
    job_id = create_job(client, ready_dataset)["id"]
    bad = client.get(f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": "nope"})
    assert bad.status_code == 422
    assert client.get("/jobs/none/events/stream").status_code == 404


def test_open_streams_hold_no_database_connection(settings: Settings, ready_dataset: str) -> None:
    # One connection in the pool, none extra: a stream that kept one would starve the rest.
    tight = settings.model_copy(
        update={
            "database_pool_size": 1,
            "database_max_overflow": 0,
            "database_pool_timeout_seconds": 2.0,
        }
    )
    with TestClient(create_app(tight, run_reconciler=False)) as tight_client:
        job_id = create_job(tight_client, ready_dataset)["id"]
        first_messages: list[str] = []
        streams = []
        for _ in range(5):

            def follow() -> None:
                with tight_client.stream("GET", f"/jobs/{job_id}/events/stream") as response:
                    for line in response.iter_lines():
                        if line.startswith("event: ") and len(first_messages) < 1000:
                            first_messages.append(line)

            thread = threading.Thread(target=follow)
            thread.start()
            streams.append(thread)
        deadline = time.monotonic() + 10
        while len(first_messages) < 5:
            assert time.monotonic() < deadline, "the streams did not start"
            time.sleep(0.05)
        # Five streams open, and ordinary requests still get the one connection.
        for _ in range(3):
            assert tight_client.get(f"/jobs/{job_id}").status_code == 200
        assert tight_client.post(f"/jobs/{job_id}/cancel").status_code == 200
        for thread in streams:
            thread.join(timeout=10)
            assert not thread.is_alive()
