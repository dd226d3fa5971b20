"""`GET /health`: 200 once the database, the broker and the object store answer, 503 otherwise;
`worker` says whether a worker of the train queue was seen lately (it does not change the
status: an api is healthy without one, and a job waits queued until one comes)."""

from __future__ import annotations

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.core.config import Settings
from app.core.db import get_engine
from app.core.liveness import MISSED_BEATS, worker_seen
from app.core.objects.store import ObjectStore
from app.http.deps import SettingsDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(settings: SettingsDep, request: Request) -> JSONResponse:
    """Report whether the database, the broker and the object store answer."""
    checks = {"database": _check_database(settings)}
    checks["broker"] = _check_broker(settings.redis_url)
    checks["object_store"] = _check_store(request.app.state.object_store)
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if healthy else 503,
        content={
            "status": "ok" if healthy else "unavailable",
            **checks,
            "worker": _check_worker(settings) if checks["broker"] == "ok" else "unknown",
        },
    )


def _check_database(settings: Settings) -> str:
    try:
        with get_engine(
            settings.resolved_database_url, settings.database_pool
        ).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


def _check_broker(redis_url: str | None) -> str:
    if not redis_url:
        return "error: no broker configured (CLIPFT_REDIS_URL is unset)"
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


# A key nothing writes: asking for it costs one HEAD (or a stat), and any answer, "not there"
# included, shows the store serves.
_PROBE_KEY = "health/probe"


def _check_store(store: ObjectStore) -> str:
    try:
        store.exists(_PROBE_KEY)
    except Exception as error:
        return f"error: {type(error).__name__}"
    return "ok"


def _check_worker(settings: Settings) -> str:
    try:
        client = redis.Redis.from_url(
            str(settings.redis_url), socket_connect_timeout=2, socket_timeout=2
        )
        seen = worker_seen(client, queue=settings.train_queue)
        client.close()
    except Exception as error:
        return f"error: {type(error).__name__}"
    if seen:
        return "ok"
    window = settings.worker_liveness_seconds * MISSED_BEATS
    return f"no worker seen in the last {window:.0f}s"
