"""The worker's heartbeat of its own: a timer in Celery's consumer loop, so it stops when the
loop stops (a hung or dead consumer), not merely when the process ends."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, ClassVar

import redis
from celery import bootsteps

from app.core.config import get_settings
from app.core.liveness import mark_seen

logger = logging.getLogger(__name__)


class Liveness(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref: Any = None

    def start(self, parent: Any) -> None:
        settings = get_settings()
        beat = Beat(
            file=settings.worker_liveness_file,
            broker_url=str(settings.redis_url),
            queue=settings.train_queue,
            seconds=settings.worker_liveness_seconds,
        )
        beat()
        self.timer_ref = parent.timer.call_repeatedly(settings.worker_liveness_seconds, beat)

    def stop(self, parent: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


class Beat:
    def __init__(self, *, file: Path, broker_url: str, queue: str, seconds: float) -> None:
        self.file = file
        self.queue = queue
        self.seconds = seconds
        self.name = socket.gethostname()
        self.client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)

    def __call__(self) -> None:
        try:
            self.file.touch()
        except OSError:
            logger.warning("could not touch the liveness file %s", self.file)
        try:
            mark_seen(self.client, queue=self.queue, worker=self.name, beat_seconds=self.seconds)
        except redis.RedisError:
            logger.warning("could not mark this worker seen in the broker")
