"""The outbox and the sender, against a real receiver on loopback: events written with the
change that causes them, signed bodies that verify, retries with backoff until accepted, no
delivery lost or doubled when a sender stops, private addresses refused at delivery too."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.db import session_scope
from app.jobs import lifecycle
from app.orm import WebhookDelivery
from app.orm.base import utcnow
from app.webhooks.sender import Sender
from tests.api.jobs import create_job
from tests.conftest import make_ready_dataset
from tests.datasets_helpers import class_zip, upload
from tests.webhooks.receiver import Clock, Receiver, serve, verify


@pytest.fixture(scope="module")
def dataset_id(hook_settings: Settings) -> str:
    return make_ready_dataset(hook_settings, per_class=4)


def register(client: TestClient, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()
    return webhook


def cancelled_job(client: TestClient, dataset_id: str, **fields: Any) -> dict[str, Any]:
    """A job cancelled while queued: `job.cancelled`, written by the cancel's own request."""
    job = create_job(client, dataset_id, **fields)
    answer = client.post(f"/jobs/{job['id']}/cancel")
    assert answer.status_code == 200
    cancelled: dict[str, Any] = answer.json()
    return cancelled


def deliveries(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    log = client.get(f"/webhooks/{webhook_id}/deliveries").json()
    items: list[dict[str, Any]] = log["items"]
    assert log["total"] == len(items)
    return items


def test_a_delivery_is_signed_as_documented_and_carries_the_job_as_get_shows_it(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str, receiver: Receiver
) -> None:
    webhook = register(hook_client, receiver.url, events=["job.cancelled"])
    job = cancelled_job(hook_client, dataset_id)
    [pending] = deliveries(hook_client, webhook["id"])
    assert pending["status"] == "pending" and pending["attempts"] == 0
    assert Sender(hook_settings).run_once() == 1
    [request] = receiver.received
    assert request.path == "/hooks"
    assert request.headers["Content-Type"] == "application/json"
    header = request.headers["Clipft-Signature"]
    # docs/webhooks.md's three lines, run as written: the right secret passes, a wrong secret,
    # a changed body or an old timestamp (a replay) fails.
    assert verify(webhook["secret"], header, request.body)
    assert not verify("whsec_wrong", header, request.body)
    assert not verify(webhook["secret"], header, request.body.replace(b"cancelled", b"succeeded"))
    assert not verify(webhook["secret"], header, request.body, now=time.time() + 3600)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(time.time() - timestamp) < 60
    event = request.event
    assert set(event) == {"id", "type", "created", "data"}
    assert event["id"] == pending["id"] == request.headers["Clipft-Delivery"]
    assert event["type"] == "job.cancelled" and event["created"].endswith("Z")
    assert event["data"] == hook_client.get(f"/jobs/{job['id']}").json() == job
    [delivered] = deliveries(hook_client, webhook["id"])
    assert delivered["status"] == "delivered" and delivered["delivered_at"] is not None
    assert delivered["attempts"] == 1 and delivered["last_status_code"] == 200
    assert [a["status_code"] for a in delivered["attempt_log"]] == [200]


def test_a_receiver_failing_three_times_gets_each_event_accepted_once_after_four_attempts(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str
) -> None:
    receiver = Receiver(failures_first=3)
    server = serve(receiver)
    try:
        webhook = register(hook_client, receiver.url)
        jobs = [cancelled_job(hook_client, dataset_id) for _ in range(2)]
        clock = Clock()
        sender = Sender(hook_settings, clock=clock)
        for _ in range(4):
            assert sender.run_once() == 2
            # Not due again until its backoff has passed.
            assert sender.run_once() == 0
            clock.advance(hook_settings.webhook_retry_max_delay_seconds)
        assert sender.run_once() == 0
    finally:
        server.shutdown()
        server.server_close()
    log = deliveries(hook_client, webhook["id"])
    assert sorted(d["subject_id"] for d in log) == sorted(job["id"] for job in jobs)
    for delivery in log:
        assert delivery["status"] == "delivered" and delivery["attempts"] == 4
        assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500, 200]
        assert [a["number"] for a in delivery["attempt_log"]] == [1, 2, 3, 4]
        assert delivery["attempt_log"][0]["error"] == "answered 500"
    assert sorted(receiver.accepted_ids()) == sorted(d["id"] for d in log)
    assert len(receiver.received) == 8
    # The same body on every attempt: a receiver can tell a repeat by its id.
    for delivery in log:
        bodies = {r.body for r in receiver.received if r.event["id"] == delivery["id"]}
        assert len(bodies) == 1


def test_backoff_doubles_with_jitter_and_gives_up_after_the_retry_window(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str
) -> None:
    receiver = Receiver(failures_first=1000)
    server = serve(receiver)
    short = hook_settings.model_copy(
        update={
            "webhook_retry_hours": 1.0,
            "webhook_retry_first_delay_seconds": 60.0,
            "webhook_retry_max_delay_seconds": 600.0,
        }
    )
    try:
        webhook = register(hook_client, receiver.url, events=["job.cancelled"])
        cancelled_job(hook_client, dataset_id)
        clock = Clock()
        sender = Sender(short, clock=clock)
        waits = []
        while sender.run_once():
            [delivery] = deliveries(hook_client, webhook["id"])
            if delivery["status"] == "failed":
                break
            due = datetime.fromisoformat(delivery["next_attempt_at"])
            waits.append((due - clock.now).total_seconds())
            clock.advance((due - clock.now).total_seconds())
    finally:
        server.shutdown()
        server.server_close()
    # Each wait in the upper half of its doubling step, capped at the longest.
    for number, wait in enumerate(waits, start=1):
        step = min(600.0, 60.0 * 2 ** (number - 1))
        assert step / 2 <= wait <= step, (number, wait)
    assert sum(waits) <= 3600
    [delivery] = deliveries(hook_client, webhook["id"])
    assert delivery["status"] == "failed" and delivery["attempts"] == len(waits) + 1
    assert delivery["last_status_code"] == 500
    assert sender.run_once() == 0


def test_a_sender_stopped_half_way_loses_nothing_and_doubles_nothing(
    hook_client: TestClient,
    hook_settings: Settings,
    dataset_id: str,
    receiver: Receiver,
) -> None:
    webhook = register(hook_client, receiver.url)
    for _ in range(3):
        cancelled_job(hook_client, dataset_id)
    clock = Clock()
    first = Sender(hook_settings, clock=clock)
    claimed = first.claim(10)
    assert len(claimed) == 3
    # It sends one of them, then stops before the others (killed: nothing released).
    first.deliver(claimed[0])
    first.close()
    second = Sender(hook_settings, clock=clock)
    # The stopped sender's leases still hold: the new one does not take them yet ...
    assert second.run_once() == 0
    # ... and once they ran out, it sends what was left, and nothing twice.
    clock.advance(first.lease.total_seconds() + 1)
    assert second.run_once() == 2
    assert second.run_once() == 0
    log = deliveries(hook_client, webhook["id"])
    assert sorted(receiver.accepted_ids()) == sorted(d["id"] for d in log)
    assert len(receiver.received) == 3
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in log)
    # The stopped sender, woken up, cannot record anything over the new one.
    assert first.deliver(claimed[1]) is None
    assert len(receiver.received) == 3


def test_two_senders_claim_each_delivery_once(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str, receiver: Receiver
) -> None:
    register(hook_client, receiver.url)
    for _ in range(4):
        cancelled_job(hook_client, dataset_id)
    one, two = Sender(hook_settings), Sender(hook_settings)
    taken_one, taken_two = one.claim(3), two.claim(3)
    assert len(taken_one) == 3 and len(taken_two) == 1
    assert not set(taken_one) & set(taken_two)


def test_the_outbox_is_written_with_the_change_and_rolled_back_with_it(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str
) -> None:
    webhook = register(hook_client, "http://127.0.0.1:9/", events=["job.failed"])
    job_id = create_job(hook_client, dataset_id)["id"]
    now = utcnow()
    with session_scope(hook_settings.resolved_database_url) as session:
        assert lifecycle.claim(session, job_id, owner="w", now=now) is not None
    with pytest.raises(RuntimeError), session_scope(hook_settings.resolved_database_url) as session:
        assert lifecycle.fail(session, job_id, owner="w", now=now, error="disk full")
        raise RuntimeError("the worker died before its commit")
    assert deliveries(hook_client, webhook["id"]) == []
    with session_scope(hook_settings.resolved_database_url) as session:
        assert lifecycle.fail(session, job_id, owner="w", now=now, error="disk full")
    [delivery] = deliveries(hook_client, webhook["id"])
    assert delivery["type"] == "job.failed" and delivery["subject_id"] == job_id
    with session_scope(hook_settings.resolved_database_url) as session:
        row = session.scalars(select(WebhookDelivery)).one()
        assert row.data == hook_client.get(f"/jobs/{job_id}").json()
        assert row.data["status"] == "failed" and row.data["error"] == "disk full"


def test_a_succeeded_job_is_announced_with_its_model_and_filters_hold(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str
) -> None:
    only_success = register(hook_client, "http://127.0.0.1:9/", events=["job.succeeded"])
    job = create_job(hook_client, dataset_id, webhook_url="http://127.0.0.1:9/own")
    own_id = job["webhook"]["id"]
    now = utcnow()
    with session_scope(hook_settings.resolved_database_url) as session:
        assert lifecycle.claim(session, job["id"], owner="w", now=now) is not None
        assert lifecycle.succeed(
            session,
            job["id"],
            owner="w",
            now=now,
            model_id="m" * 32,
            report=None,
            message="succeeded",
            data={},
        )
    for webhook_id in (only_success["id"], own_id):
        [delivery] = deliveries(hook_client, webhook_id)
        assert delivery["type"] == "job.succeeded" and delivery["subject_id"] == job["id"]
    # A cancelled job reaches neither: one hears only successes, the other only its own job.
    cancelled_job(hook_client, dataset_id)
    assert len(deliveries(hook_client, only_success["id"])) == 1
    assert len(deliveries(hook_client, own_id)) == 1
    with session_scope(hook_settings.resolved_database_url) as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        assert {row.data["model_id"] for row in rows} == {"m" * 32}
        assert {row.data["status"] for row in rows} == {"succeeded"}


def test_a_jobs_own_webhook_hears_only_that_job_and_the_tenants_hears_every_job(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str, receiver: Receiver
) -> None:
    tenant_hook = register(hook_client, receiver.url, events=["job.cancelled"])
    job = cancelled_job(hook_client, dataset_id, webhook_url=receiver.url + "/job")
    other = cancelled_job(hook_client, dataset_id)
    job_hook_id = hook_client.get("/webhooks").json()["items"][0]["id"]
    assert job_hook_id != tenant_hook["id"]
    assert [d["subject_id"] for d in deliveries(hook_client, job_hook_id)] == [job["id"]]
    assert sorted(d["subject_id"] for d in deliveries(hook_client, tenant_hook["id"])) == sorted(
        [job["id"], other["id"]]
    )
    assert Sender(hook_settings).run_once() == 3
    assert sorted(r.path for r in receiver.received) == ["/hooks", "/hooks", "/hooks/job"]


def test_dataset_uploads_announce_ready_and_failed(
    hook_client: TestClient, hook_settings: Settings, receiver: Receiver
) -> None:
    webhook = register(hook_client, receiver.url, events=["dataset.ready", "dataset.failed"])
    ready = upload(hook_client, class_zip({"cat": 4, "dog": 4}), name="pets")
    assert ready.status_code == 201, ready.text
    refused = upload(hook_client, b"not a zip at all")
    assert refused.status_code in (400, 422), refused.text
    assert Sender(hook_settings).run_once() == 2
    events = {r.event["type"]: r.event for r in receiver.received}
    assert (
        events["dataset.ready"]["data"] == hook_client.get(f"/datasets/{ready.json()['id']}").json()
    )
    failed = events["dataset.failed"]["data"]
    assert failed["status"] == "failed" and failed["detail"] == refused.json()["detail"]
    assert failed["status_code"] == refused.status_code
    assert hook_client.get(f"/datasets/{failed['id']}").status_code == 404
    assert len(deliveries(hook_client, webhook["id"])) == 2


def test_a_private_address_is_refused_at_delivery_time_too(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str, receiver: Receiver
) -> None:
    # Registered while the operator allowed it; the setting has been turned off since.
    webhook = register(hook_client, receiver.url.replace("127.0.0.1", "localhost"))
    cancelled_job(hook_client, dataset_id)
    guarded = hook_settings.model_copy(update={"webhook_allow_private": False})
    assert Sender(guarded).run_once() == 1
    assert receiver.received == []
    [delivery] = deliveries(hook_client, webhook["id"])
    assert delivery["status"] == "pending" and delivery["last_status_code"] is None
    assert delivery["last_error"].startswith("not sent: the URL's host localhost (127.0.0.1)")
    assert "loopback" in delivery["attempt_log"][0]["error"]


def test_a_slow_receiver_times_out_and_holds_up_no_other_delivery(
    hook_client: TestClient, hook_settings: Settings, dataset_id: str, receiver: Receiver
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never answers
    try:
        slow = register(hook_client, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        fast = register(hook_client, receiver.url)
        cancelled_job(hook_client, dataset_id)
        patient = hook_settings.model_copy(update={"webhook_timeout_seconds": 2.0})
        stop = threading.Event()
        sender = Sender(patient)
        loop = threading.Thread(target=sender.run_forever, args=(stop,))
        loop.start()
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.01)
        # The fast receiver was answered while the slow one still kept its attempt waiting.
        [waiting] = deliveries(hook_client, slow["id"])
        assert receiver.received and deliveries(hook_client, fast["id"])[0]["status"] == "delivered"
        assert waiting["status"] == "sending" and waiting["attempts"] == 0
        while deliveries(hook_client, slow["id"])[0]["attempts"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stop.set()
        loop.join(timeout=10)
        assert not loop.is_alive()
        sender.close()
    finally:
        silent.close()
    [timed_out] = deliveries(hook_client, slow["id"])
    assert timed_out["status"] == "pending"
    assert timed_out["attempt_log"][0]["error"] == "no answer within 2 s"
    assert json.loads(receiver.received[0].body)["type"] == "job.cancelled"
