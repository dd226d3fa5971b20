"""`GET /metrics`: Prometheus text format, for an admin key (or with authentication off).

Besides the process's own counters and histograms (predict latency, forward-pass sizes, model
cache hits and loads), each scrape reads jobs by status from the database and the train
queue's depth from the broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.auth.requests import get_principal
from app.core.config import Settings
from app.core.db import session_scope
from app.core.error_responses import error_responses
from app.core.errors import ClientError
from app.core.principal import Principal
from app.http.deps import SettingsDep
from app.jobs.lifecycle import JobStatus
from app.orm import Job

router = APIRouter(tags=["health"])


class ServiceState(Collector):
    """Jobs by status and the queue's depth, read at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("clipft_jobs", "Jobs by status.", labels=["status"])
        with session_scope(
            self.settings.resolved_database_url, self.settings.database_pool
        ) as session:
            rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        counts = {status: count for status, count in rows}
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        if self.settings.redis_url:
            depth = GaugeMetricFamily(
                "clipft_queue_depth", "Training messages waiting in the broker's queue."
            )
            try:
                client = redis.Redis.from_url(self.settings.redis_url, socket_timeout=3)
                depth.add_metric([], client.llen(self.settings.train_queue))
                yield depth
            except redis.RedisError:
                pass  # /health says the broker is down; the scrape goes on without it


def admin_only(principal: Annotated[Principal, Depends(get_principal)]) -> None:
    if not principal.admin:
        raise ClientError("metrics are for operators: use an admin key", status_code=403)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(admin_only)],
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(401, 403, 503),
    },
)
def metrics(settings: SettingsDep) -> Response:
    """Prometheus metrics of this api (all its worker processes) and of the service's state."""
    process_registry: CollectorRegistry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        process_registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(process_registry)
    state = CollectorRegistry(auto_describe=True)
    state.register(ServiceState(settings))
    body = generate_latest(process_registry) + generate_latest(state)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
