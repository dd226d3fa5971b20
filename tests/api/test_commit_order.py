"""Writes are committed before the response goes out: a client can act on its answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.db import session_scope
from app.main import create_app
from app.orm import Job

Message = MutableMapping[str, Any]


def test_a_write_is_committed_before_its_response_starts(
    settings: Settings, ready_dataset: str
) -> None:
    app = create_app(settings, run_reconciler=False)
    statuses_when_answering: list[str] = []

    async def observing_app(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        async def observing_send(message: Message) -> None:
            # The moment the client could act on the answer: what does another session see?
            if message["type"] == "http.response.start" and scope["path"].endswith("/cancel"):
                job_id = scope["path"].split("/")[2]
                with session_scope(settings.resolved_database_url) as session:
                    job = session.get(Job, job_id)
                    assert job is not None
                    statuses_when_answering.append(job.status)
            await send(message)

        await app(scope, receive, observing_send)

    with TestClient(observing_app) as client:
        job = client.post("/jobs", json={"dataset_id": ready_dataset, "base_model": "tiny-clip"})
        response = client.post(f"/jobs/{job.json()['id']}/cancel")
    assert response.json()["status"] == "cancelled"
    assert statuses_when_answering == ["cancelled"]
